/* Log lines to the parent as JSON (it re-emits them in --log-format). */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "nsexec.h"

void nsexec_log(int fd, const char *level, const char *fmt, ...)
{
	char msg[512], line[1200];
	size_t o = 0;
	va_list ap;
	int saved = errno;

	if (fd < 0)
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);

	o += snprintf(line, sizeof(line), "{\"level\":\"%s\",\"msg\":\"", level);
	/* Escape what JSON needs; messages are short and ASCII in practice. */
	for (const char *p = msg; *p && o < sizeof(line) - 8; p++) {
		if (*p == '"' || *p == '\\') {
			line[o++] = '\\';
			line[o++] = *p;
		} else if ((unsigned char)*p < 0x20) {
			o += snprintf(line + o, sizeof(line) - o, "\\u%04x", *p);
		} else {
			line[o++] = *p;
		}
	}
	o += snprintf(line + o, sizeof(line) - o, "\"}\n");
	/* Best effort: a full or closed log pipe must not kill the bootstrap. */
	if (write(fd, line, o) < 0)
		(void)0;
	errno = saved;
}
