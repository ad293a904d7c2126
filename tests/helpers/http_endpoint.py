"""A scripted loopback HTTP endpoint for the webhook and notification tests."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Endpoint:
    """A loopback HTTP server that records every POST and answers as scripted.

    `script` is consumed one answer per request: a status code, a (status, body) pair,
    or "hang" (read the request, answer nothing until the test ends). When it runs out,
    `default` answers. `url` is the server's address followed by `path`.
    """

    def __init__(self, path="/"):
        self.requests = []
        self.script = []
        self.default = 200
        self.release = threading.Event()
        self.lock = threading.Lock()
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with endpoint.lock:
                    answer = endpoint.script.pop(0) if endpoint.script else endpoint.default
                    endpoint.requests.append(
                        {
                            "path": self.path,
                            "headers": dict(self.headers),
                            "body": json.loads(body),
                            "answer": answer,
                        }
                    )
                if answer == "hang":
                    endpoint.release.wait(10)
                    self.close_connection = True
                    return
                status, text = answer if isinstance(answer, tuple) else (answer, "")
                data = text.encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_port}{path}"

    @property
    def bodies(self):
        return [r["body"] for r in self.requests]

    def close(self):
        self.release.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)
