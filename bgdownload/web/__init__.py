"""What every HTTP adapter shares: requests, error responses, health, SSE/WebSocket framing."""
