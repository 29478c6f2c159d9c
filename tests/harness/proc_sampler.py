# -*- coding: utf-8 -*-
"""Proof that a secret never reaches a child process's argv or environment: sample /proc while tools run."""

import os
import threading


class ProcSampler(threading.Thread):
    """Samples /proc/<pid>/cmdline AND /proc/<pid>/environ of every process until stopped.

    ``leaks``: the processes (outside ``exclude_pgids``) whose argv or environment held ``needle``.
    ``seen``/``seen_env``: the watched tools (for example pg_dump, psql, mariadb-dump) seen running, and those
    whose environment was read at least once while they ran, so a test can prove the sampling looked at them.
    """

    def __init__(self, needle, watch, exclude_pgids=()):
        super().__init__(daemon=True)
        self.needle = needle.encode()
        self.watch = tuple(watch)
        self.exclude_pgids = set(exclude_pgids)
        self.leaks = []
        self.seen = set()
        self.seen_env = set()
        self.samples = 0
        self._stop_event = threading.Event()

    @staticmethod
    def _read(pid, name):
        try:
            with open("/proc/%s/%s" % (pid, name), "rb") as handle:
                return handle.read()
        except OSError:
            return None

    def _pgid(self, pid):
        stat = self._read(pid, "stat")
        try:
            return int(stat.rsplit(b")", 1)[1].split()[2])
        except (AttributeError, ValueError, IndexError):
            return None

    def run(self):
        own = str(os.getpid())
        while not self._stop_event.is_set():
            for pid in os.listdir("/proc"):
                if not pid.isdigit() or pid == own:
                    continue
                cmdline = self._read(pid, "cmdline")
                if not cmdline:
                    continue
                environ = self._read(pid, "environ")
                tool = os.path.basename(cmdline.split(b"\0")[0].decode("utf-8", "replace"))
                if tool in self.watch:
                    self.seen.add(tool)
                    if environ is not None and self._read(pid, "cmdline") == cmdline:
                        self.seen_env.add(tool)
                for where, data in (("cmdline", cmdline), ("environ", environ)):
                    if data and self.needle in data and self._pgid(pid) not in self.exclude_pgids:
                        self.leaks.append("%s of %s: %s" % (where, tool, cmdline.replace(b"\0", b" ")[:200]))
            self.samples += 1

    def stop(self):
        self._stop_event.set()
        self.join(30)
