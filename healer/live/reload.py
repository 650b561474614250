"""SIGHUP: read the configuration and rules again and apply what changed.

Validated first: a file that cannot be used keeps the running configuration, and the
reason is logged (file, line, fix) and counted. A valid one takes effect without
touching what did not change: new shares are held and started, removed ones are
released (their daemon stopped, their socket removed), a changed share's next daemon
starts with its new settings, new logs are followed and removed ones dropped, new
rules take over the engine state (windows of rules that are gone are dropped and
noted in the journal). The journal directory cannot change while healer runs.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

from healer.config import Config, ConfigError, ShareConfig, load_config
from healer.engine import Engine, RuleSet
from healer.engine.rules import RulesError
from healer.holder.client import HolderError
from healer.logline import LEVELS
from healer.rulefiles import default_rules_dir, load_rules

if TYPE_CHECKING:
    from healer.live.watchdog import Watchdog

__all__ = ["Reloader"]

log = logging.getLogger(__name__)


class Reloader:
    """Applies a new configuration to a running watchdog (on its decision loop)."""

    def __init__(self, watchdog: Watchdog) -> None:
        self.watchdog = watchdog
        self.wanted = threading.Event()
        self.done = 0
        self.failures = 0

    def reload(self) -> bool:
        """Whether the new configuration was taken."""
        watchdog = self.watchdog
        watchdog.notifier.reloading("reloading")
        try:
            config = load_config(watchdog.config.file)
            rules = load_rules(config.rules or default_rules_dir())
            if config.journal != watchdog.config.journal:
                log.error("reload refused: [healer] journal cannot change while healer runs")
                self.failures += 1
                return False
        except (ConfigError, RulesError) as exc:
            self.failures += 1
            what = "configuration" if isinstance(exc, ConfigError) else "rules"
            log.error("reload refused, the %s cannot be used; keeping the running one:", what)
            for problem in exc.problems:
                log.error("  %s", problem)
            return False
        finally:
            watchdog.notifier.ready(watchdog.status_line())
        self.apply(config, rules)
        self.done += 1
        log.info(
            "reloaded %s: %d share(s), rules %s", config.file, len(config.shares), rules.digest
        )
        return True

    def apply(self, config: Config, rules: RuleSet) -> None:
        watchdog = self.watchdog
        old = watchdog.config
        if rules.digest != watchdog.runner.engine.rules.digest:
            for what in watchdog.runner.use_engine(Engine(rules)):
                log.warning("reload: %s", what)
            watchdog.metrics.policy = rules.policy
        before = {s.name: s for s in old.shares}
        after = {s.name: s for s in config.shares}
        for name in sorted(before.keys() - after.keys()):
            self._remove(before[name])
        for name in sorted(after.keys() & before.keys()):
            if after[name] != before[name]:
                self._change(before[name], after[name])
        for name in sorted(after.keys() - before.keys()):
            self._add(after[name])
        watchdog.actions.shares = dict(after)
        watchdog.actions.vmms = {v.name: v for v in config.vmms}
        watchdog.actions.guests = {g.vm: g for g in config.guests}
        watchdog.actions.alert = config.alert
        watchdog.actions.qemu.clear()
        watchdog.config = config
        from healer.live.watchdog import share_keys, tailed_logs, vm_keys  # noqa: PLC0415

        watchdog.keys = watchdog.logs.keys = share_keys(config)
        watchdog.logs.vm_keys = vm_keys(config)
        logging.getLogger("healer").setLevel(LEVELS[config.log_level])
        watchdog.logs.clock_skew = config.clock_skew  # for the parsers made from now on
        if watchdog.feed is not None:
            watchdog.feed.clock_skew = config.clock_skew

        wanted = {log_.source.name: log_ for log_ in tailed_logs(config)}
        for name in set(watchdog.logs.names) - wanted.keys():
            watchdog.logs.remove(name)
        for name, log_ in wanted.items():
            if name not in watchdog.logs.names:
                watchdog.logs.add(log_)

    def _remove(self, share: ShareConfig) -> None:
        watchdog = self.watchdog
        log.warning("reload: share %s removed; its virtiofsd is stopped", share.name)
        if share.mode == "supervise" and watchdog.holder is not None:
            try:
                watchdog.holder.release(share.name)
            except HolderError as exc:
                log.error("reload: the holder could not release %s: %s", share.name, exc)
        if watchdog.feed is not None:
            watchdog.feed.forget_share(share.name)
        watchdog.daemons.remove(share.name)

    def _add(self, share: ShareConfig) -> None:
        watchdog = self.watchdog
        log.info("reload: share %s added", share.name)
        watchdog.daemons.add(share)
        if share.mode == "supervise" and watchdog.holder is not None:
            if watchdog.feed is not None and share.log:
                watchdog.feed.copies[share.name] = share.log
            try:
                watchdog.holder.listen(share.name, share.socket)
            except HolderError as exc:
                log.error("reload: the socket of %s cannot be held: %s", share.name, exc)
                return
            failed = watchdog.daemons.start(share.name)
            if failed is not None:
                log.error("reload: virtiofsd for %s did not start: %s", share.name, failed)

    def _change(self, before: ShareConfig, after: ShareConfig) -> None:
        if (before.socket, before.mode) != (after.socket, after.mode):
            self._remove(before)
            self._add(after)
            return
        log.info("reload: share %s changed; its next virtiofsd starts with the change", after.name)
        self.watchdog.daemons.update(after)
        if self.watchdog.feed is not None:
            self.watchdog.feed.copies[after.name] = after.log
