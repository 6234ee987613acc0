"""A local Google Cloud Storage for tests: gcp-storage-emulator, in memory, on 127.0.0.1.

``python tests/remote/gcs_emulator.py BUCKET...`` serves the buckets on a free port, prints
``READY <port>`` and runs until its stdin closes or it gets SIGTERM. :func:`client_env` is what a
process needs to send gcsfs (epath's gs:// backend), tensorstore (orbax's array data) and
array_record to it, with no credentials and no real network.

The stock emulator needs four fixes for these clients:
* gcsfs renames with ``POST .../o/SRC/moveTo/o/DST``, which it answers 501 (gcsfs then retries
  for ~30 s per rename before copying): served here as copy + delete;
* tensorstore's conditional writes need ``x-goog-generation`` on downloads and
  ``ifGeneration(Not)Match`` enforced (412 / 304 / 404 as GCS does); without them a
  read-modify-write fails with "Malformed StorageGeneration";
* tensorstore opens many connections at once: a listen backlog of 256 instead of 5;
* array_record leaves downloads half-read: a thread per connection instead of one for all,
  and it reads a file's footer with a suffix range (``bytes=-N``), answered here.
"""

from __future__ import annotations

import http.server
import re
import signal
import socketserver
import sys
import threading
from http import HTTPStatus


def client_env(port: int) -> dict[str, str]:
  url = f"http://127.0.0.1:{port}"
  return {
      "STORAGE_EMULATOR_HOST": url,  # gcsfs
      "FSSPEC_GS_TOKEN": "anon",
      "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",  # else gcsfs tries gRPC/TLS: minutes of stalls
      "TENSORSTORE_GCS_HTTP_URL": url,  # tensorstore's gcs driver (orbax)
      "TENSORSTORE_GCS_BACKEND": "gcs",
      "GOOGLE_AUTH_TOKEN_FOR_TESTING": "emulator",  # a fixed token: no credential search
      "GCE_METADATA_ROOT": "127.0.0.1:9",  # a metadata probe fails fast on a closed port
      "NO_GCE_CHECK": "true",
      "CLOUD_STORAGE_EMULATOR_ENDPOINT": url,  # array_record's GCS client
  }


def _patch(srv, objects) -> None:
  from gcp_storage_emulator.exceptions import NotFound

  def move(request, response, storage, *args, **kwargs):
    p = request.params
    try:
      obj = objects._copy(request.base_url, storage, p["bucket_name"], p["object_id"],
                          p["bucket_name"], p["dest_object_id"])
      storage.delete_file(p["bucket_name"], p["object_id"])
      response.json(obj)
    except NotFound:
      response.status = HTTPStatus.NOT_FOUND

  def generation(storage, bucket, name) -> int:
    try:
      return int(storage.get_file_obj(bucket, name)["generation"])
    except NotFound:
      return 0  # ifGenerationMatch=0: "the object does not exist"

  def allowed(request, response, storage, name, read: bool) -> bool:
    q = request.query
    if "ifGenerationMatch" not in q and "ifGenerationNotMatch" not in q:
      return True
    gen = generation(storage, request.params["bucket_name"], name)
    if "ifGenerationMatch" in q and gen != int(q["ifGenerationMatch"][0]):
      response.status = (HTTPStatus.NOT_FOUND if read and gen == 0
                         else HTTPStatus.PRECONDITION_FAILED)
      return False
    if "ifGenerationNotMatch" in q and gen == int(q["ifGenerationNotMatch"][0]):
      response.status = HTTPStatus.NOT_MODIFIED if read else HTTPStatus.PRECONDITION_FAILED
      return False
    return True

  def suffix_range(request, storage, name) -> None:
    """``Range: bytes=-N`` (the last N bytes, how array_record finds a file's footer) as the
    ``bytes=S-`` the stock handler understands; it would send the whole object instead."""
    headers = request._request_handler.headers
    m = re.fullmatch(r"\s*bytes=-(\d+)\s*", headers.get("range", "") or "")
    if m:
      size = len(storage.get_file(request.params["bucket_name"], name))
      headers.replace_header("range", f"bytes={max(size - int(m.group(1)), 0)}-")

  def reading(fn):
    def handler(request, response, storage, *args, **kwargs):
      name = request.params["object_id"]
      if not allowed(request, response, storage, name, True):
        return None
      try:
        suffix_range(request, storage, name)
      except NotFound:
        pass
      out = fn(request, response, storage, *args, **kwargs)
      if response.status in (HTTPStatus.OK, HTTPStatus.PARTIAL_CONTENT):
        try:
          obj = storage.get_file_obj(request.params["bucket_name"], name)
          response["x-goog-generation"] = str(obj["generation"])
          response["x-goog-metageneration"] = str(obj.get("metageneration", 1))
        except NotFound:
          pass
      return out
    return handler

  def writing(fn, name_of):
    def handler(request, response, storage, *args, **kwargs):
      if not allowed(request, response, storage, name_of(request), False):
        return None
      return fn(request, response, storage, *args, **kwargs)
    return handler

  def insert_name(request):
    if "name" in request.query:
      return request.query["name"][0]
    data = request.data  # a multipart upload names the object in its metadata part
    return data["meta"].get("name") if isinstance(data, dict) else None

  swap = {objects.get: reading(objects.get), objects.download: reading(objects.download),
          objects.insert: writing(objects.insert, insert_name),
          objects.delete: writing(objects.delete, lambda r: r.params["object_id"])}
  move_route = (r"^/storage/v1/b/(?P<bucket_name>[-.\w]+)/o/(?P<object_id>.*[^/]+)"
                r"/moveTo/o/(?P<dest_object_id>.*[^/]+)$", {srv.POST: move})
  lock = threading.Lock()  # the in-memory storage is not thread-safe: one handler at a time

  def locked(fn):
    def handler(*args, **kwargs):
      with lock:  # the response body is written after the handler returns, outside the lock
        return fn(*args, **kwargs)
    return handler

  srv.HANDLERS = tuple((rx, {m: locked(f) for m, f in h.items()}) for rx, h in (
      (move_route,) + tuple((rx, {m: swap.get(f, f) for m, f in h.items()})
                            for rx, h in srv.HANDLERS)))
  objects.insert = locked(swap[objects.insert])  # the router's fallback for upload URLs

  class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    # One thread per connection: array_record's reader opens a download and reads only what it
    # needs, so a single-threaded server blocks on that write and stalls every other client.
    daemon_threads = True
    request_queue_size = 256

    def handle_error(self, request, client_address):  # clients hang up on raced requests
      if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
        super().handle_error(request, client_address)

  srv.server.HTTPServer = Server


def serve(buckets: list[str]) -> None:
  from gcp_storage_emulator import server as srv
  from gcp_storage_emulator.handlers import buckets as bucket_handlers
  from gcp_storage_emulator.handlers import objects

  _patch(srv, objects)
  server = srv.create_server("127.0.0.1", 0, in_memory=True, default_bucket=buckets[0])
  for name in buckets[1:]:
    bucket_handlers.create_bucket(name, server._storage)
  server.start()
  print(f"READY {server._api._httpd.server_address[1]}", flush=True)
  done = threading.Event()
  signal.signal(signal.SIGTERM, lambda *a: done.set())
  threading.Thread(target=lambda: (sys.stdin.read(), done.set()), daemon=True).start()
  done.wait()
  server.stop()


if __name__ == "__main__":
  serve(sys.argv[1:] or ["jaxtok-test"])
