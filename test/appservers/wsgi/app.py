"""A real WSGI app (the standard library's wsgiref) for test/appservers.

It echoes, as JSON, the request's method, path, query string and every HTTP_* environ key,
which is how WSGI apps read headers: wsgiref maps "-" and "_" in a header name both to "_",
so "X_Auth_Token" reads as HTTP_X_AUTH_TOKEN. It listens on 127.0.0.1 on the port given as
the first argument (0: any) and prints "listening <port>".
"""
import json
import sys
from wsgiref.simple_server import WSGIRequestHandler, make_server


def app(environ, start_response):
    body = json.dumps({
        "method": environ["REQUEST_METHOD"],
        "path": environ["PATH_INFO"],
        "query": environ["QUERY_STRING"],
        "environ": {k: v for k, v in environ.items() if k.startswith("HTTP_")},
    }).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


class QuietHandler(WSGIRequestHandler):
    def log_message(self, *args):
        pass


if __name__ == "__main__":
    server = make_server("127.0.0.1", int(sys.argv[1]) if len(sys.argv) > 1 else 0, app, handler_class=QuietHandler)
    print("listening", server.server_port, flush=True)
    server.serve_forever()
