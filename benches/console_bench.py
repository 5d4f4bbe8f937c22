"""The console's costs, for benches/console.sh (which starts the cluster and fills it).

1. Time to first render: chromium (Selenium, chromium-driver) loads the features page ROUNDS
   times; the page records when it first rendered the catalog (ms from navigation start), and
   the instances page's first page is timed the same way from its hash change.
2. Load on the node: PAGES page emulators follow the node's event stream and refetch what each
   frame names (as the page's script does); the node's CPU time and peak memory are measured
   over a burst of CHANGES toggle changes, and the same burst with no page open, alternating.
   A real page refetches exactly this; emulators stand in for 50 browsers, which would not fit
   on the machine beside the cluster.
"""
import argparse
import http.client
import json
import os
import statistics
import subprocess
import threading
import time


def first_render(url, rounds):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = os.environ.get("CHROMIUM", "/usr/bin/chromium")
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1400,900"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver")),
                              options=options)
    features, instances, loads = [], [], []
    try:
        for _ in range(rounds):
            driver.get("about:blank")
            driver.get(f"{url}/ui/#/features")
            deadline = time.monotonic() + 30
            timing = None
            while time.monotonic() < deadline and timing is None:
                timing = driver.execute_script(
                    "return window.consoleTimings && document.querySelectorAll('#features tbody tr').length > 0"
                    " ? window.consoleTimings.firstRenderMs : null;")
                if timing is None:
                    time.sleep(0.01)
            if timing is None:
                raise RuntimeError("the features page did not render within 30 s")
            features.append(timing)
            loads.append(driver.execute_script(
                "return performance.getEntriesByType('navigation')[0].loadEventEnd;"))
            # The instances page: from the hash change to its first page of rows.
            took = driver.execute_async_script("""
                const done = arguments[arguments.length - 1];
                const t0 = performance.now();
                location.hash = '#/instances';
                const look = () => {
                  if (document.querySelectorAll('#instances tbody tr').length > 0) done(performance.now() - t0);
                  else setTimeout(look, 2);
                };
                look();
            """)
            instances.append(took)
    finally:
        driver.quit()
    return features, instances, loads


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


class Page(threading.Thread):
    """One console page's network behaviour: the event stream, and a refetch of what each
    change frame names (everything: the whole catalog)."""

    def __init__(self, host, port, stop):
        super().__init__(daemon=True)
        self.host, self.port, self.stop = host, port, stop
        self.fetches = 0
        self.bytes = 0
        self.frames = 0
        self.connected = threading.Event()

    def get(self, path):
        c = http.client.HTTPConnection(self.host, self.port, timeout=10)
        c.request("GET", path)
        body = c.getresponse().read()
        c.close()
        self.fetches += 1
        self.bytes += len(body)

    def run(self):
        c = http.client.HTTPConnection(self.host, self.port, timeout=30)
        c.request("GET", "/api/v1/events")
        r = c.getresponse()
        self.get("/api/v1/features")
        self.connected.set()
        buffer = b""
        while not self.stop.is_set():
            chunk = r.read1(65536)
            if not chunk:
                return
            buffer += chunk
            while b"\n\n" in buffer:
                block, buffer = buffer.split(b"\n\n", 1)
                lines = block.decode().split("\n")
                if "event: change" not in lines:
                    continue
                self.frames += 1
                data = json.loads("".join(l[5:].strip() for l in lines if l.startswith("data:")))
                if data.get("everything") or len(data.get("features", [])) > 100:
                    self.get("/api/v1/features")
                elif data.get("features"):
                    self.get("/api/v1/features?names=" + ",".join(data["features"]))


def burst(bin_path, endpoints, changes, round_no):
    state = "off" if round_no % 2 else "on"
    for i in range(changes):
        subprocess.run([bin_path, "--endpoints", endpoints, "toggle", state, f"feature-{i:05}"],
                       check=True, stdout=subprocess.DEVNULL)


def measure(pid, work):
    """CPU seconds of the node during `work`, and its peak RSS."""
    peak = [rss_mib(pid)]
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], rss_mib(pid))
            time.sleep(0.02)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    before = cpu_seconds(pid)
    work()
    time.sleep(0.5)  # the last frames and refetches
    after = cpu_seconds(pid)
    done.set()
    t.join()
    return after - before, peak[0]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--pages", type=int, default=50)
    p.add_argument("--changes", type=int, default=100)
    p.add_argument("--pid", type=int, required=True)
    p.add_argument("--bin", required=True)
    p.add_argument("--endpoints", required=True)
    a = p.parse_args()

    features, instances, loads = first_render(a.url, a.rounds)
    med = statistics.median
    print(f"first render of the features page: median {med(features):.0f} ms from navigation start "
          f"(runs: {', '.join(f'{x:.0f}' for x in features)}); page load event {med(loads):.0f} ms")
    print(f"instances page, first 100 rows: median {med(instances):.0f} ms from the hash change")

    host, port = a.url.split("//")[1].split(":")
    rows = []
    for r in range(a.rounds):
        idle_cpu, idle_peak = measure(a.pid, lambda: burst(a.bin, a.endpoints, a.changes, 2 * r))
        stop = threading.Event()
        pages = [Page(host, int(port), stop) for _ in range(a.pages)]
        rss_before = rss_mib(a.pid)
        for page in pages:
            page.start()
        for page in pages:
            page.connected.wait(30)
        time.sleep(0.5)
        open_rss = rss_mib(a.pid)
        with_cpu, with_peak = measure(a.pid, lambda: burst(a.bin, a.endpoints, a.changes, 2 * r + 1))
        fetches = sum(x.fetches for x in pages) - a.pages
        frames = sum(x.frames for x in pages)
        stop.set()
        rows.append((idle_cpu, with_cpu, idle_peak, with_peak, rss_before, open_rss, fetches, frames))
        print(f"round {r + 1}: burst CPU {idle_cpu:.2f} s without pages, {with_cpu:.2f} s with {a.pages}; "
              f"peak RSS {idle_peak:.1f} / {with_peak:.1f} MiB; {frames} frames, {fetches} refetches")
        time.sleep(1)
    col = list(zip(*rows))
    print(f"median over {a.rounds} rounds: node CPU during the burst {med(col[0]):.2f} s without pages, "
          f"{med(col[1]):.2f} s with {a.pages} pages (+{med(col[1]) - med(col[0]):.2f} s); "
          f"memory {med(col[4]):.1f} MiB before the pages, {med(col[5]):.1f} MiB with them open, "
          f"peak {med(col[3]):.1f} MiB during the burst; per page {med(col[7]) / a.pages:.1f} frames and "
          f"{med(col[6]) / a.pages:.1f} refetches for {a.changes} changes")


if __name__ == "__main__":
    main()
