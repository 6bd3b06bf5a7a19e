"""A small Flask app for ferrocorn's end-to-end tests."""
import hashlib

from flask import Flask, Response, jsonify, request, stream_with_context

app = Flask(__name__)


@app.get("/healthz")
def healthz():
    return "ok"


@app.get("/json")
def json_view():
    return jsonify(hello="flask", args=request.args.to_dict(), scheme=request.scheme)


@app.post("/form")
def form():
    return jsonify(name=request.form["name"], n=len(request.form))


@app.post("/upload")
def upload():
    f = request.files["file"]
    data = f.read()
    return jsonify(filename=f.filename, size=len(data), sha256=hashlib.sha256(data).hexdigest())


@app.get("/stream")
def stream():
    def gen():
        for i in range(5):
            yield "chunk %d\n" % i
    return Response(stream_with_context(gen()), mimetype="text/plain")


@app.get("/boom")
def boom():
    raise RuntimeError("flask view failed")
