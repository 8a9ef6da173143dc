"""What the benchmark scripts share: a server process on a free port, and a
few facts about the machine. Python standard library only."""

import argparse
import http.client
import json
import os
import platform
import socket
import subprocess
import time


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, name, argv, log_path):
        self.name, self.argv, self.log_path = name, argv, log_path
        self.port = int(argv[argv.index("--port") + 1])
        self.log = open(log_path, "wb")
        self.proc = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.time() + 300
        while True:
            if self.proc.poll() is not None:
                self.log.close()
                raise RuntimeError(f"{name} exited ({self.proc.returncode}); see {log_path}")
            try:
                st, _ = self.request("GET", "/health", None, timeout=5)
                if st == 200:
                    break
            except (OSError, http.client.HTTPException):
                pass
            if time.time() > deadline:
                self.stop()
                raise RuntimeError(f"{name} not ready after 300 s; see {log_path}")
            time.sleep(0.2)

    def request(self, method, path, body, timeout=600):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            data = json.dumps(body).encode() if body is not None else None
            c.request(method, path, body=data, headers={"content-type": "application/json"} if data else {})
            r = c.getresponse()
            return r.status, r.read()
        finally:
            c.close()

    def log_size(self):
        self.log.flush()
        return os.path.getsize(self.log_path)

    def log_since(self, pos):
        self.log.flush()
        with open(self.log_path, "rb") as f:
            f.seek(pos)
            return f.read().decode("utf-8", "replace")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def sh(argv):
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        return (p.stdout + p.stderr).strip()
    except (OSError, subprocess.SubprocessError) as e:
        return f"({e})"


def loadavg():
    try:
        return " ".join(open("/proc/loadavg").read().split()[:3])
    except OSError:
        return "?"


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def report(lines, md_path, json_path, data):
    """Print the Markdown lines, and write them and the data where asked."""
    md = "\n".join(lines) + "\n"
    print(md)
    if md_path:
        with open(md_path, "w") as f:
            f.write(md)
    if json_path:
        with open(json_path, "w") as f:
            json.dump(data, f, indent=1)


def server_bench_args(doc):
    """The arguments every decache-against-llama-server benchmark takes."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--decache", required=True)
    ap.add_argument("--llama-server", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("-t", "--threads", type=int, default=2)
    return ap
