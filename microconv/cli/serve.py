"""``microconv serve``: a drawing pad in the browser that shows how the network reads a letter.

A small Starlette application served by uvicorn (the optional ``web`` extra). The page is
static HTML, CSS and plain JavaScript shipped in ``static/``: no build step, nothing fetched
from elsewhere. Scripts use the same JSON API; every POST carries the picture itself as the
request body, with an image Content-Type:

- ``POST /api/letter``: one handwritten letter (the pad's PNG, or any picture of one letter)
  -> its top-3 letters, the 28x28 input exactly as the network receives it, the feature maps
  of the three convolution blocks and the 26 scores before the softmax;
- ``POST /api/photo``: a photo of handwriting -> what ``microconv predict --json`` reports:
  the text with its lines, and every letter's box, line, word and top-3;
- ``GET /api/info``: the checkpoint, the backend, the letters and the upload limit.

Uploads stay in memory and may be MAX_UPLOAD_BYTES long. Every failed request gets
``{"error": "one line"}``: a 4xx when the picture or the request is at fault, a 500 when the
server is (the server goes on serving). The network is loaded once; its graph nodes hold
their values, so a lock lets one request at a time run it, while decoding and preparing
pictures run in parallel.
"""

from __future__ import annotations

import contextlib
import importlib.resources
import io
import logging
import socket
import threading
import time

import numpy as np

from microconv.errors import MicroconvError
from microconv.letters import photo
from microconv.letters.checkpoint import load_checkpoint
from microconv.letters.model import LetterGraph

try:
    import uvicorn
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.exceptions import HTTPException
    from starlette.responses import HTMLResponse, JSONResponse
    from starlette.routing import Mount, Route
    from starlette.staticfiles import StaticFiles
    from threadpoolctl import ThreadpoolController
except ImportError as exc:          # the optional web extra; _require_web says how to get it
    _web_missing = exc.name or "a library of the web extra"
else:
    _web_missing = None

MAX_UPLOAD_BYTES = 10 * 2**20       # a phone photo is a few MB; the pad's PNG a few KB
TOO_LARGE = f"the upload is larger than the limit of {MAX_UPLOAD_BYTES / 2**20:g} MiB"
DECIMALS = 4                        # digits of the numbers in answers: plenty for pictures
UNSHIFTED = photo.READ_SHIFTS.index((0, 0))   # the view of a letter as it is
log = logging.getLogger("microconv.serve")


def _require_web():
    if _web_missing is not None:
        raise MicroconvError(f"microconv serve needs the web extra ({_web_missing} is not "
                             'installed): pip install "microconv[web]"')


# --- reading pictures --------------------------------------------------------------------------

class LetterReader:
    """A checkpoint's classifier plus a graph that shows its layers; safe to share by threads."""

    def __init__(self, classifier):
        self.classifier = classifier
        # one batch holds every view of a letter that the photo reader averages
        self._graph = LetterGraph(classifier.model, len(photo.READ_SHIFTS))
        self._lock = threading.Lock()
        self._blas = ThreadpoolController()

    @contextlib.contextmanager
    def _network(self):
        """One caller at a time, on one BLAS thread: a few letters are far too little work to
        share, and waking idle BLAS threads costs more than the arithmetic."""
        with self._lock, self._blas.limit(limits=1, user_api="blas"):
            yield

    def predict(self, images):
        """Log-probabilities of prepared letters, as ``Classifier.predict`` (the photo reader's
        entry point), one caller at a time."""
        with self._network():
            return self.classifier.predict(images)

    def read_letter(self, data):
        """One letter (an image file's bytes) -> the answer, read as ``predict`` reads (the
        shifted views of ``photo.read_prepared``), and what each layer saw of the letter as
        it is: one run of the network for all of it."""
        letter = drawn_letter(photo.read_image(io.BytesIO(data)))[None]
        views = self.classifier.preprocess(photo.shifted_views(letter))
        with self._network():
            self._graph.feed(views)
            log_probs = self._graph.log_probs.numpy()
            scores = self._graph.scores.numpy()[UNSHIFTED]
            blocks = [block.numpy()[UNSHIFTED] for block in self._graph.blocks]
        ranked = photo.top_letters(photo.mean_of_views(log_probs, len(photo.READ_SHIFTS))[0])
        return {"letter": ranked[0][0], "top3": ranked, "input": _rounded(views[UNSHIFTED, 0]),
                "blocks": [_rounded(block) for block in blocks], "scores": _rounded(scores)}

    def read_photo(self, data):
        """A photo (an image file's bytes) -> what ``microconv predict`` reports of it
        (``photo.read_page``): the text with its lines, each letter with its box, line and
        word, and the size of the picture as read, which the boxes refer to."""
        return photo.read_page(self, io.BytesIO(data))


def drawn_letter(gray):
    """The 28x28 letter that ``microconv predict`` reads on a picture of one letter: the pad
    holds one letter by definition, so split ink is joined into one."""
    return photo.one_letter(gray, "the picture")


def _rounded(array):
    return np.round(np.asarray(array, dtype=np.float64), DECIMALS).tolist()


# --- the web application -----------------------------------------------------------------------

def create_app(reader, checkpoint_name):
    """The Starlette application: the page, and the JSON API answered by ``reader``."""
    _require_web()
    info = {"checkpoint": checkpoint_name,
            "backend": reader.classifier.model.backend.describe(),
            "letters": list(photo.LETTERS), "max_upload_bytes": MAX_UPLOAD_BYTES}

    page = importlib.resources.files("microconv.cli").joinpath("static", "index.html")

    async def show_page(request):
        return HTMLResponse(page.read_text(encoding="utf-8"))

    async def show_info(request):
        return JSONResponse(info)

    return Starlette(
        routes=[Route("/", show_page),
                Mount("/static", StaticFiles(packages=[("microconv.cli", "static")])),
                Route("/api/info", show_info),
                Route("/api/letter", _endpoint(reader.read_letter), methods=["POST"]),
                Route("/api/photo", _endpoint(reader.read_photo), methods=["POST"])],
        exception_handlers={HTTPException: _http_error})


def _endpoint(read):
    """A POST handler: the uploaded picture goes to ``read`` on a worker thread."""

    async def handle(request):
        data = await _upload(request)
        try:
            return JSONResponse(await run_in_threadpool(read, data))
        except MicroconvError as exc:
            return _error(422, exc)
        except Exception as exc:  # noqa: BLE001 -- one bad request must never stop the server
            log.exception("%s %s failed", request.method, request.url.path)
            return _error(500, f"internal error ({type(exc).__name__}: {exc})")

    return handle


async def _upload(request):
    """The request body: a picture of at most MAX_UPLOAD_BYTES, held in memory only."""
    kind = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if not kind.startswith("image/"):
        raise HTTPException(415, "send the picture itself as the request body, with an image "
                                 f"Content-Type such as image/png (got {kind or 'none'})")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_UPLOAD_BYTES:
        raise HTTPException(413, TOO_LARGE)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_UPLOAD_BYTES:
            raise HTTPException(413, TOO_LARGE)
    if not body:
        raise HTTPException(400, "the request body is empty: send a picture")
    return bytes(body)


async def _http_error(request, exc):
    return _error(exc.status_code, exc.detail)


def _error(status, reason):
    return JSONResponse({"error": " ".join(str(reason).split())}, status_code=status)


# --- serving -----------------------------------------------------------------------------------

def listen(host, port):
    """A listening socket, made before the server starts: a busy port or an unknown host is a
    one-line error, and port 0 picks a free port."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        return socket.create_server((host, port), family=family)
    except OSError as exc:
        raise MicroconvError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def address(sock):
    """The URL a browser opens for a listening socket."""
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


def _server(app):
    return uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))


@contextlib.contextmanager
def running(app, host="127.0.0.1", port=0):
    """Serve ``app`` from a background thread (for tests, benchmarks and notebooks); yields
    the base URL and stops the server on leaving the block."""
    _require_web()
    sock = listen(host, port)
    server = _server(app)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        while not server.started:
            if not thread.is_alive():
                raise MicroconvError("the web server stopped while starting")
            time.sleep(0.01)
        yield address(sock)
    finally:
        server.should_exit = True
        thread.join()
        sock.close()


def serve(checkpoint, host, port, backend, backend_options, say=print):
    """Load the checkpoint once and serve the pad until Ctrl-C; ``say`` gets the address."""
    _require_web()
    classifier = load_checkpoint(checkpoint, backend, **backend_options)
    classifier.require_letters(checkpoint)
    app = create_app(LetterReader(classifier), str(checkpoint))
    with contextlib.closing(listen(host, port)) as sock:
        say(f"microconv: the drawing pad reads letters with {checkpoint} on {backend} at "
            f"{address(sock)} (Ctrl-C stops)")
        _server(app).run(sockets=[sock])
