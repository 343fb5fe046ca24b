#!/usr/bin/env python3
"""The usual Python alternative that `make bench` compares sega-uploader with: a watchdog
observer on one date folder and a `requests.post` multipart upload per closed file, from a
thread pool of WORKERS threads (no database, no retries: the simplest script people write).

usage: bench_watchdog.py present|watch URL FOLDER DATE DIR WORKERS

present: upload every image already in DIR, then exit.
watch:   print READY once the watch is in place, upload each file as it is closed, and exit
         when stdin closes (after the uploads in flight).

Needs `pip install watchdog requests`. Run by sega-bench; not part of the product.
"""
import os
import sys
from concurrent.futures import ThreadPoolExecutor

import requests
from watchdog.events import FileSystemEventHandler
from watchdog.observers import Observer

IMAGE = (".jpg", ".jpeg", ".png")


def main():
    mode, url, folder, date, directory, workers = sys.argv[1:7]
    pool = ThreadPoolExecutor(int(workers))

    def upload(path):
        with open(path, "rb") as f:
            r = requests.post(
                url,
                data={"folder": folder, "date": date},
                files={"file": (os.path.basename(path), f, "image/jpeg")},
                timeout=60,
            )
        r.raise_for_status()

    if mode == "present":
        names = sorted(n for n in os.listdir(directory) if n.lower().endswith(IMAGE))
        list(pool.map(upload, (os.path.join(directory, n) for n in names)))
        return

    class Handler(FileSystemEventHandler):
        def on_closed(self, event):
            if not event.is_directory and event.src_path.lower().endswith(IMAGE):
                pool.submit(upload, event.src_path)

    observer = Observer()
    observer.schedule(Handler(), directory, recursive=False)
    observer.start()
    print("READY", flush=True)
    sys.stdin.read()
    observer.stop()
    observer.join()
    pool.shutdown(wait=True)


if __name__ == "__main__":
    main()
