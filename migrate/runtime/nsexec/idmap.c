/*
 * The child's half of the uid/gid map handshake.
 *
 * After unshare(CLONE_NEWUSER) we hold every capability in the new user
 * namespace but map to nobody; only a process in the parent namespace may
 * write our uid_map/gid_map (user_namespaces(7)). So we ask the parent and
 * wait: it writes the maps (directly, or through newuidmap/newgidmap for
 * multi-range rootless maps) and answers "idmap_ok".
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "nsexec.h"

int nsexec_send(int sync_fd, const char *msg)
{
	ssize_t n;

	do {
		n = send(sync_fd, msg, strlen(msg), MSG_NOSIGNAL);
	} while (n < 0 && errno == EINTR);
	return n < 0 ? -errno : 0;
}

int nsexec_expect(int sync_fd, const char *type)
{
	char buf[256], want[96];
	ssize_t n;

	do {
		n = recv(sync_fd, buf, sizeof(buf) - 1, 0);
	} while (n < 0 && errno == EINTR);
	if (n < 0)
		return -errno;
	if (n == 0)
		return -EPIPE; /* the parent went away */
	buf[n] = '\0';
	snprintf(want, sizeof(want), "\"type\": \"%s\"", type);
	if (strstr(buf, want))
		return 0;
	snprintf(want, sizeof(want), "\"type\":\"%s\"", type);
	return strstr(buf, want) ? 0 : -EPROTO;
}

int nsexec_request_idmap(int sync_fd, int log_fd)
{
	int ret;

	nsexec_log(log_fd, "debug", "nsexec: asking the parent for uid/gid maps");
	ret = nsexec_send(sync_fd, "{\"type\":\"idmap\"}");
	if (ret < 0)
		return ret;
	return nsexec_expect(sync_fd, "idmap_ok");
}
