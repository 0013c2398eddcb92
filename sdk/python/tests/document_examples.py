"""The OnMemOS document's Python examples, word for word (docs: /work/shared/onmemos-v3.md, "Code Examples"):
"Python SDK Usage", "Context Manager Usage" and "WebSocket Shell Usage". The tests run them unchanged but for
the server's URL, the API key and (in the WebSocket example, whose session id is made up) the session id."""

PYTHON_SDK_USAGE = r'''from sdk.python.client import OnMemOSClient

# Initialize client
client = OnMemOSClient(
    base_url="http://localhost:8080",
    api_key="your-api-key"
)

# Create session with automatic provider selection
session = client.create_session({
    "template": "python",
    "namespace": "my-project",
    "user": "developer",
    "ttl_minutes": 120
})

print(f"Session created: {session['id']}")

# Execute commands
result = client.execute_session(session['id'], "python --version")
print(f"Python version: {result['stdout']}")

# Execute multiple commands
commands = [
    "pwd",
    "ls -la",
    "echo 'Hello from OnMemOS!'",
    "python -c 'import sys; print(sys.version)'"
]

for cmd in commands:
    result = client.execute_session(session['id'], cmd)
    print(f"Command: {cmd}")
    print(f"Output: {result['stdout']}")
    print(f"Success: {result['success']}\n")

# Clean up
client.delete_session(session['id'])
'''

CONTEXT_MANAGER_USAGE = r'''from sdk.python.client import OnMemOSClient

client = OnMemOSClient("http://localhost:8080", "your-api-key")

# Cloud Run context manager
with client.cloudrun_workspace_session("python", "data-analysis", "analyst", ttl_minutes=60) as workspace:
    result = workspace.execute("pip install pandas numpy")
    print(f"Install result: {result['success']}")
    
    result = workspace.execute("python -c 'import pandas as pd; print(pd.__version__)'")
    print(f"Pandas version: {result['stdout']}")

# GKE context manager (planned)
with client.gke_workspace_session("python", "ml-training", "researcher", ttl_minutes=480) as workspace:
    result = workspace.execute("nvidia-smi")
    print(f"GPU info: {result['stdout']}")
'''

WEBSOCKET_SHELL_USAGE = r'''import asyncio
import websockets
import json

async def interactive_shell(session_id: str, api_key: str):
    ws_url = f"ws://localhost:8080/v1/cloudrun/workspaces/{session_id}/shell?api_key={api_key}"
    
    async with websockets.connect(ws_url) as websocket:
        # Send command
        await websocket.send(json.dumps({
            "type": "command",
            "command": "ls -la /workspace"
        }))
        
        # Receive response
        response = await websocket.recv()
        data = json.loads(response)
        
        if data.get("type") == "command_result":
            print(f"Output: {data['stdout']}")
            print(f"Error: {data['stderr']}")
            print(f"Success: {data['success']}")

# Usage
asyncio.run(interactive_shell("ws-my-project-developer-123", "your-api-key"))
'''


def substitute(example: str, base_url: str, api_key: str, session_id: str = "") -> str:
    """The example with this server's URL and key (and session id) in place of the document's."""
    ws_base = "ws" + base_url[len("http") :]
    out = example.replace("http://localhost:8080", base_url).replace("ws://localhost:8080", ws_base)
    out = out.replace('"your-api-key"', repr(api_key))
    if session_id:
        out = out.replace('"ws-my-project-developer-123"', repr(session_id))
    return out
