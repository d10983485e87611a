/* net.h - socket helpers: address parsing, listening sockets, accepted
 * socket options.  Every call reports failure with -errno or a message. */
#ifndef CD_NET_H
#define CD_NET_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

typedef struct cd_addr {
    struct sockaddr_storage ss;
    socklen_t len;
} cd_addr;

/* Parse "HOST:PORT" (IPv4 literal or "localhost") or "[IPV6]:PORT".
 * Returns 0, or -EINVAL with a reason in err. */
int cd_addr_parse(const char *text, cd_addr *out, char *err, size_t errlen);
/* Format as "1.2.3.4:5" or "[::1]:5"; returns the length. */
int cd_addr_format(const struct sockaddr *sa, char *buf, size_t len);
/* Port of an address (host order). */
int cd_addr_port(const cd_addr *a);
void cd_addr_set_port(cd_addr *a, int port);

/* Non-blocking, close-on-exec listening socket with SO_REUSEADDR and
 * SO_REUSEPORT (one per worker on the same address; the kernel spreads
 * connections), IPV6_V6ONLY for IPv6.  Returns the fd or -errno. */
int cd_net_listen(const cd_addr *a, int backlog);
/* The address a socket is bound to. */
int cd_net_local_addr(int fd, cd_addr *out);
/* Options for an accepted socket: TCP_NODELAY (frames are written whole
 * and corked per loop iteration, so Nagle only adds latency). */
void cd_net_tune_accepted(int fd);

#endif
