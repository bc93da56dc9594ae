/*
 * The `migrate` executable: a launcher for the Python runtime (issue 16).
 *
 * The commands that join a container (create, run, exec) must run from an
 * interpreter the container cannot write (CVE-2019-5736, exe_guard.py).
 * Done in Python, that costs a second interpreter start plus the imports
 * needed to make the protected view, on every such command (~20 ms, more
 * than a third of `runc run`). Here it costs a few syscalls: this program
 * makes the same protected view of the interpreter and execs it once.
 *
 * The interpreter is the one pip wrote into the shebang of the
 * `migrate-py` entry script installed beside this program (the virtualenv's
 * or the system's python), and the script is what it runs: so this program
 * knows nothing of Python's layout, and `migrate-py` alone behaves exactly
 * like this program, only slower (the Python side re-executes itself when
 * it finds no protection: exe_guard.py).
 *
 * The protected view, as in exe_guard.py (the Python side is the fallback
 * and checks the result, `exe_is_protected`):
 * 1. a read-only overlayfs made with fsopen(2)/fsmount(2) and never attached
 *    to a path, whose first lower layer is the interpreter's directory
 *    (sys_ro_overlay_open in syscalls.c): nobody can write through it and
 *    no mount namespace holds it, so nothing can remount it;
 * 2. else a sealed memfd copy of the interpreter.
 * When neither works, or this program cannot make sense of the script, it
 * runs the script unprotected and leaves the decision to Python (which
 * re-executes itself protected or reports the error in one line).
 *
 * The environment mark `_MIGRATE_EXE_GUARD=overlay|memfd` tells the Python
 * side which view it runs from; a mark inherited from our caller is dropped.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/sendfile.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "nsexec.h"

#define SCRIPT "migrate-py"
#define MARK "_MIGRATE_EXE_GUARD"
#define WARMUP "_MIGRATE_ATTACH_WARMUP"
#define WARMUP_EVERY_MS 3         /* well within a grace period */
#define WARMUP_MAX_MS 2000

extern char **environ;

static void die(const char *what, const char *path, int err)
{
	/* One line, like every other error of the runtime; exit 1. */
	fprintf(stderr, "migrate: %s %s: %s\n", what, path, strerror(err));
	exit(1);
}

/* Global flags that take a value (main.py's _VALUED). */
static int takes_value(const char *name, size_t len)
{
	static const char *const valued[] = { "root", "log", "log-format", "rootless", "criu" };
	for (size_t i = 0; i < sizeof(valued) / sizeof(valued[0]); i++)
		if (strlen(valued[i]) == len && !strncmp(valued[i], name, len))
			return 1;
	return 0;
}

/*
 * Whether the command joins a container: the first argument after the
 * global flags (parsed as main.py's parse_globals does) is create, run or
 * exec. A wrong guess costs time only: unprotected, Python re-executes
 * itself; protected without need, the command runs the same.
 */
static int joins_container(int argc, char **argv)
{
	int i = 1;

	while (i < argc && argv[i][0] == '-' && strcmp(argv[i], "-")) {
		const char *name = argv[i] + strspn(argv[i], "-");
		const char *eq = strchr(name, '=');

		if (!eq && takes_value(name, strlen(name)))
			i++;
		i++;
	}
	if (i >= argc)
		return 0;
	return !strcmp(argv[i], "create") || !strcmp(argv[i], "run") || !strcmp(argv[i], "exec");
}

/*
 * The interpreter named by the script's "#!" line, when that line is a
 * plain absolute path (pip writes a /bin/sh trampoline instead when the
 * path has spaces or is too long: then 0, and the script runs as it is).
 */
static int interpreter_of(const char *script, char *out, size_t size)
{
	char line[PATH_MAX + 3];
	ssize_t n;
	char *end;
	int fd = open(script, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		die("cannot open the entry script", script, errno);
	n = read(fd, line, sizeof(line) - 1);
	close(fd);
	if (n < 3)
		return 0;
	line[n] = '\0';
	end = strchr(line, '\n');
	if (!end || line[0] != '#' || line[1] != '!' || line[2] != '/')
		return 0;
	*end = '\0';
	if (strpbrk(line + 2, " \t") || strstr(line, "/bin/sh") || (size_t)(end - line - 2) >= size)
		return 0;
	memcpy(out, line + 2, end - line - 1);
	return 1;
}

/*
 * The hot commands (those an engine runs for every container, and the
 * checkpoint and restore it runs for every container it moves). For them,
 * when the package is installed in the interpreter's virtualenv, Python
 * starts without `site` and without the entry script (issue 16): `site`
 * reads pyvenv.cfg and every .pth file of site-packages (~3 ms), and an
 * entry script from an older pip imports `re` (~5 ms). What `site` would
 * have done for us is one sys.path entry, handed over as an argument.
 */
static int is_hot(int argc, char **argv)
{
	static const char *const hot[] = { "create", "run", "exec", "start", "state", "kill",
					   "delete", "checkpoint", "restore" };
	int i = 1;

	while (i < argc && argv[i][0] == '-' && strcmp(argv[i], "-")) {
		const char *name = argv[i] + strspn(argv[i], "-");

		if (!strchr(name, '=') && takes_value(name, strlen(name)))
			i++;
		i++;
	}
	if (i >= argc)
		return 0;
	for (size_t k = 0; k < sizeof(hot) / sizeof(hot[0]); k++)
		if (!strcmp(argv[i], hot[k]))
			return 1;
	return 0;
}

/*
 * An editable install (`pip install -e`) puts no package in site-packages:
 * a .pth file there installs a finder, __editable___migrate_*_finder.py,
 * whose MAPPING names the package's directory, and `site` imports it with
 * pathlib, re and urllib (~20 ms per start, more than `runc exec` takes).
 * The directory above the package does the same as a sys.path entry. 1
 * with that directory in `out` when the finder maps exactly `migrate` to a
 * plain path (no escapes) that holds cli/main.py; 0 otherwise (`site`
 * decides, as before).
 */
static int editable_parent(const char *sp, char *out, size_t size)
{
	static const char prefix[] = "__editable___migrate_", suffix[] = "_finder.py";
	static const char key[] = "'migrate': '";
	char path[PATH_MAX], text[65536], dir[PATH_MAX];
	const char *map, *open_, *start, *end;
	struct dirent *de;
	struct stat st;
	int found = 0, fd;
	size_t len;
	ssize_t n;
	DIR *d = opendir(sp);

	if (!d)
		return 0;
	while ((de = readdir(d))) {
		len = strlen(de->d_name);
		if (strncmp(de->d_name, prefix, sizeof(prefix) - 1) || len < sizeof(suffix) ||
		    strcmp(de->d_name + len - (sizeof(suffix) - 1), suffix))
			continue;
		if (found++)                    /* two finders: let `site` decide */
			break;
		if (snprintf(path, sizeof(path), "%s/%s", sp, de->d_name) >= (int)sizeof(path))
			break;
	}
	closedir(d);
	if (found != 1)
		return 0;
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	n = read(fd, text, sizeof(text) - 1);
	close(fd);
	if (n <= 0)
		return 0;
	text[n] = '\0';
	map = strstr(text, "\nMAPPING");
	open_ = map ? strchr(map, '{') : NULL;
	if (!open_ || strncmp(open_ + 1, key, sizeof(key) - 1))
		return 0;
	start = open_ + sizeof(key);
	end = strchr(start, '\'');
	if (!end || end[1] != '}' || end - start < 8 || (size_t)(end - start) >= sizeof(dir))
		return 0;
	memcpy(dir, start, end - start);
	dir[end - start] = '\0';
	/* repr() escapes what is not printable: then the text is not the path */
	if (dir[0] != '/' || strpbrk(dir, "\\\n") || strcmp(dir + (end - start) - 8, "/migrate"))
		return 0;
	if (snprintf(path, sizeof(path), "%s/cli/main.py", dir) >= (int)sizeof(path) ||
	    stat(path, &st) < 0)
		return 0;
	dir[end - start - 8] = '\0';
	return snprintf(out, size, "%s", dir[0] ? dir : "/") < (int)size;
}

/*
 * <prefix>/lib/pythonX.Y/site-packages when the interpreter named by the
 * script is a virtualenv's (<prefix>/bin/NAME next to <prefix>/pyvenv.cfg)
 * and the `migrate` package is a plain directory there, or an editable
 * install's directory that editable_parent understands (then that
 * directory's parent in `pkg`, else `pkg` is ""). 1 when found.
 */
static int venv_site_packages(const char *interp, char *out, size_t size, char *pkg,
			      size_t pkg_size)
{
	char prefix[PATH_MAX], path[PATH_MAX];
	const char *slash = strrchr(interp, '/');
	struct dirent *de;
	struct stat st;
	int found = 0;
	size_t n;
	DIR *lib;

	if (!slash || slash == interp)
		return 0;
	n = slash - interp;                      /* <prefix>/bin */
	while (n > 0 && interp[n - 1] == '/')
		n--;
	while (n > 0 && interp[n - 1] != '/')
		n--;
	if (n <= 1 || n - 1 >= sizeof(prefix))   /* "/bin/python": no venv */
		return 0;
	memcpy(prefix, interp, n - 1);
	prefix[n - 1] = '\0';
	if (snprintf(path, sizeof(path), "%s/pyvenv.cfg", prefix) >= (int)sizeof(path) ||
	    stat(path, &st) < 0)
		return 0;
	if (snprintf(path, sizeof(path), "%s/lib", prefix) >= (int)sizeof(path))
		return 0;
	lib = opendir(path);
	if (!lib)
		return 0;
	while ((de = readdir(lib))) {
		if (strncmp(de->d_name, "python3.", 8))
			continue;
		if (snprintf(path, sizeof(path), "%s/lib/%s/site-packages", prefix,
			     de->d_name) >= (int)sizeof(path) - 16)
			continue;
		n = strlen(path);
		strcpy(path + n, "/migrate/cli/main.py");
		if (stat(path, &st) == 0) {
			pkg[0] = '\0';
		} else {
			path[n] = '\0';
			if (!editable_parent(path, pkg, pkg_size))
				continue;
		}
		path[n] = '\0';
		if (found)              /* two Python versions: let `site` decide */
			return closedir(lib), 0;
		found = snprintf(out, size, "%s", path) < (int)size;
	}
	closedir(lib);
	return found;
}

static int is_within(const char *dir, const char *other)
{
	size_t n = strlen(dir);

	if (!strcmp(dir, "/"))
		return 1;
	return !strncmp(dir, other, n) && (other[n] == '/' || other[n] == '\0');
}

/*
 * overlayfs wants two lower layers when it has no upper one; the second is
 * any directory that neither holds nor lies inside the first (the first
 * wins for the interpreter's name).
 */
static int overlay_fd(const char *real)
{
	static const char *const seconds[] = { "/dev", "/run", "/tmp", "/etc" };
	char dir[PATH_MAX], lower[2 * PATH_MAX + 2];
	const char *slash = strrchr(real, '/');

	if (!slash || slash == real || (size_t)(slash - real) >= sizeof(dir))
		return -EINVAL;
	memcpy(dir, real, slash - real);
	dir[slash - real] = '\0';
	for (size_t i = 0; i < sizeof(seconds) / sizeof(seconds[0]); i++) {
		if (is_within(dir, seconds[i]) || is_within(seconds[i], dir))
			continue;
		snprintf(lower, sizeof(lower), "%s:%s", dir, seconds[i]);
		return sys_ro_overlay_open(lower, slash + 1);
	}
	return -EINVAL;
}

static int memfd_fd(const char *real)
{
	struct stat st;
	off_t done = 0;
	int src, fd, err = 0;

	src = open(real, O_RDONLY | O_CLOEXEC);
	if (src < 0)
		return -errno;
	fd = memfd_create("migrate-python", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (fd < 0 || fstat(src, &st) < 0) {
		err = -errno;
		goto out;
	}
	/* sendfile: copy_file_range refuses EXDEV into a memfd */
	while (done < st.st_size) {
		ssize_t n = sendfile(fd, src, NULL, st.st_size - done);
		if (n <= 0) {
			err = n < 0 ? -errno : -EIO;
			goto out;
		}
		done += n;
	}
	if (fcntl(fd, F_ADD_SEALS, F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE) < 0)
		err = -errno;
out:
	close(src);
	if (err && fd >= 0)
		close(fd);
	return err ? err : fd;
}

/*
 * The first cgroup attach after a quiet spell waits for an RCU grace period
 * (10-15 ms here; runtime/cgroups/warmup.py), and so does one that comes
 * more than a grace period after the last. create, run and exec attach a
 * process: a child of ours pays that wait now, while Python starts, by
 * moving itself into the cgroup it is already in, and then keeps the kernel
 * in that state by doing it again every few milliseconds until Python,
 * about to attach, kills it (at most for WARMUP_MAX_MS). Its pid goes to
 * Python in WARMUP, which also reaps it. Best effort: any failure only
 * means no warm-up.
 */
static void start_attach_warmup(char *env, size_t size)
{
	char line[PATH_MAX], path[2 * PATH_MAX];
	const char *mount = "/sys/fs/cgroup";
	struct stat st;
	ssize_t n;
	char *own, *end;
	int fd;
	pid_t pid = fork();

	if (pid != 0) {
		if (pid > 0)
			snprintf(env, size, WARMUP "=%d", (int)pid);
		return;
	}
	prctl(PR_SET_PDEATHSIG, SIGKILL);      /* a killed runtime: no reason to go on */
	syscall(SYS_close_range, 0, ~0U, 0);   /* nobody waits on our stdio */
	fd = open("/proc/self/cgroup", O_RDONLY | O_CLOEXEC);
	n = fd < 0 ? -1 : read(fd, line, sizeof(line) - 1);
	if (n <= 0)
		_exit(0);
	line[n] = '\0';
	own = strncmp(line, "0::", 3) ? strstr(line, "\n0::") : line - 1;
	if (!own)
		_exit(0);
	own += 4;
	end = strchr(own, '\n');
	if (end)
		*end = '\0';
	if (stat("/sys/fs/cgroup/cgroup.controllers", &st) < 0)
		mount = "/sys/fs/cgroup/unified";
	snprintf(path, sizeof(path), "%s%s/cgroup.procs", mount, strcmp(own, "/") ? own : "");
	fd = open(path, O_WRONLY | O_CLOEXEC);
	for (int ms = 0; fd >= 0 && ms < WARMUP_MAX_MS; ms += WARMUP_EVERY_MS) {
		struct timespec pause = { 0, WARMUP_EVERY_MS * 1000000L };

		if (write(fd, "0", 1) < 0)
			_exit(1);
		nanosleep(&pause, NULL);
	}
	_exit(0);
}

/* environ without any mark of ours, plus `mark` and `warmup` when not empty. */
static char **environment(const char *mark, const char *warmup)
{
	size_t n = 0, j = 0;
	char **env;

	while (environ[n])
		n++;
	env = calloc(n + 3, sizeof(char *));
	if (!env)
		die("cannot start", "", ENOMEM);
	for (size_t i = 0; i < n; i++)
		if (strncmp(environ[i], MARK, strlen(MARK)) &&
		    strncmp(environ[i], WARMUP "=", strlen(WARMUP) + 1))
			env[j++] = environ[i];
	if (mark)
		env[j++] = (char *)mark;
	if (warmup[0])
		env[j++] = (char *)warmup;
	env[j] = NULL;
	return env;
}

int main(int argc, char **argv)
{
	char self[PATH_MAX], script[PATH_MAX + sizeof(SCRIPT) + 1], interp[PATH_MAX], real[PATH_MAX];
	char site[PATH_MAX], pkg[PATH_MAX], warmup[64] = "";
	const char *how = NULL;
	char **args;
	int fd = -1;
	ssize_t n;
	char *slash;

	if (joins_container(argc, argv))
		start_attach_warmup(warmup, sizeof(warmup));
	n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	if (n < 0)
		die("cannot read", "/proc/self/exe", errno);
	self[n] = '\0';
	slash = strrchr(self, '/');
	if (!slash)
		die("cannot locate myself:", self, EINVAL);
	*slash = '\0';
	snprintf(script, sizeof(script), "%s/%s", self, SCRIPT);

	args = calloc(argc + 7, sizeof(char *));
	if (!args)
		die("cannot start", "", ENOMEM);
	if (!interpreter_of(script, interp, sizeof(interp))) {
		/* Not a plain shebang: the kernel runs it; Python protects itself. */
		args[0] = script;
		memcpy(args + 1, argv + 1, argc * sizeof(char *));
		execve(script, args, environment(NULL, warmup));
		die("cannot execute", script, errno);
	}
	/* argv[0] is the interpreter's path as pip wrote it: Python finds its
	 * prefix (the virtualenv's pyvenv.cfg) from it, not from /proc/self/exe. */
	args[0] = interp;
	if (is_hot(argc, argv) &&
	    venv_site_packages(interp, site, sizeof(site), pkg, sizeof(pkg))) {
		/* -S: no site; -P: nothing of the current directory on sys.path
		 * (-c would put it first). The site directory (and an editable
		 * install's package parent after it) travel as argv[1] (and
		 * argv[2]) so that no path is ever quoted into code. */
		args[1] = "-S";
		args[2] = "-P";
		args[3] = "-c";
		args[5] = site;
		if (pkg[0]) {
			args[4] = "import sys; sys.path += sys.argv[1:3]; del sys.argv[1:3]; "
				  "from migrate.cli.main import program; program()";
			args[6] = pkg;
			memcpy(args + 7, argv + 1, argc * sizeof(char *));
		} else {
			args[4] = "import sys; sys.path.append(sys.argv.pop(1)); "
				  "from migrate.cli.main import program; program()";
			memcpy(args + 6, argv + 1, argc * sizeof(char *));
		}
	} else {
		args[1] = script;
		memcpy(args + 2, argv + 1, argc * sizeof(char *));
	}

	if (joins_container(argc, argv) && realpath(interp, real)) {
		const char *want = getenv("MIGRATE_EXE_GUARD");   /* "memfd": tests of the fallback */

		if (!want || strcmp(want, "memfd")) {
			fd = overlay_fd(real);
			how = MARK "=overlay";
		}
		if (fd < 0) {
			fd = memfd_fd(real);
			how = MARK "=memfd";
		}
	}
	if (fd >= 0) {
		syscall(SYS_execveat, fd, "", args, environment(how, warmup), AT_EMPTY_PATH);
		close(fd);  /* e.g. noexec: run unprotected, Python protects itself */
	}
	execve(interp, args, environment(NULL, warmup));
	die("cannot execute", interp, errno);
	return 1;
}
