"""The `server` backend: llama-server started per load group, or any OpenAI-compatible URL, measured over HTTP."""
