# Two things are compiled at install time:
# - the cffi extension (the C namespace bootstrap), so run time imports only
#   the generated module (~1 ms instead of ~35 ms);
# - the `migrate` executable (nsexec/launcher.c): it makes the protected,
#   read-only view of the interpreter (CVE-2019-5736, runtime/exe_guard.py)
#   and starts Python once, instead of Python starting twice (issue 16). It
#   runs the `migrate-py` entry script pip installs beside it.
import os

from setuptools import setup
from distutils.command.build_scripts import build_scripts  # setuptools' distutils, once setuptools is in

NSEXEC = os.path.join("migrate", "runtime", "nsexec")
LAUNCHER_SOURCES = [os.path.join(NSEXEC, "launcher.c"), os.path.join(NSEXEC, "syscalls.c")]


class build_launcher(build_scripts):
    """The one "script" is the launcher, compiled rather than copied (a
    script goes where pip puts entry scripts, for normal and editable
    installs alike; data files are skipped by editable ones)."""

    def copy_scripts(self):
        from distutils.ccompiler import new_compiler
        from distutils.sysconfig import customize_compiler

        compiler = new_compiler()
        customize_compiler(compiler)
        temp = os.path.join(self.get_finalized_command("build").build_temp, "launcher")
        objects = compiler.compile(LAUNCHER_SOURCES, output_dir=temp,
                                   extra_postargs=["-O2", "-Wall"])
        self.mkpath(self.build_dir)
        compiler.link_executable(objects, "migrate", output_dir=self.build_dir)
        out = os.path.join(self.build_dir, "migrate")
        return [out], [out]


setup(cffi_modules=["migrate/runtime/nsexec/_build.py:ffibuilder"],
      scripts=[LAUNCHER_SOURCES[0]],
      cmdclass={"build_scripts": build_launcher})
