# -*- coding: utf-8 -*-
"""Run a module's ``main()`` in-process with given arguments; exit_json/fail_json become exceptions.

    with pytest.raises(ModuleFailed) as info:
        run_main(db_backup.main, {"dest": "/x"})
    info.value.result["msg"]
"""

import contextlib
import json
from unittest import mock

from ansible.module_utils import basic

try:
    from ansible.module_utils.testing import patch_module_args
except ImportError:  # ansible-core < 2.19
    @contextlib.contextmanager
    def patch_module_args(args=None):
        with mock.patch.object(basic, "_ANSIBLE_ARGS", json.dumps({"ANSIBLE_MODULE_ARGS": args or {}}).encode()):
            yield


class ModuleExit(Exception):
    """exit_json was called; ``result`` holds what the module returned."""

    def __init__(self, result):
        super(ModuleExit, self).__init__(result)
        self.result = result


class ModuleFailed(ModuleExit):
    """fail_json was called; ``result["msg"]`` is the one message."""


def _exit_json(self, **kwargs):  # pylint: disable=unused-argument
    kwargs.setdefault("changed", False)
    raise ModuleExit(kwargs)


def _fail_json(self, msg, **kwargs):  # pylint: disable=unused-argument
    kwargs.update(msg=msg, failed=True)
    raise ModuleFailed(kwargs)


def run_main(main, args, check_mode=False, name="unit"):
    """Call ``main()`` with ``args``; returns the result of exit_json or raises ModuleFailed."""
    args = dict(args, _ansible_check_mode=check_mode, _ansible_module_name="mlflowops.maintenance.%s" % name)
    with patch_module_args(args), \
            mock.patch.object(basic.AnsibleModule, "exit_json", _exit_json), \
            mock.patch.object(basic.AnsibleModule, "fail_json", _fail_json):
        try:
            main()
        except ModuleFailed:
            raise
        except ModuleExit as done:
            return done.result
    raise AssertionError("main() returned without exit_json or fail_json")
