/*
 * A peer for `make bench`: Debian's libwebsockets, as a minimal server.
 *
 *   lws_server PORT [poll|ev|uv [BUFFER]]
 *
 *   /echo       every message sent back as it came (text stays text)
 *   /ws/ROOM    a subscriber of ROOM
 *   /ws         a publisher: {"type":"publish","channel":"ROOM",...} is read
 *               for its channel and the message as received is broadcast to
 *               the room's connections.  Any connection may publish.
 *
 * The lws way: nothing is written outside LWS_CALLBACK_SERVER_WRITEABLE, one
 * lws_write() per writeable callback, so each connection has a ring of
 * pending messages and asks for another writeable callback while the ring is
 * not empty.  A message is allocated once (with LWS_PRE headroom for the
 * frame header lws writes in front of it) and shared, reference-counted, by
 * every ring it is in.
 *
 * Configured for speed, fairly: one service thread, no extensions (no
 * permessage-deflate), UTF-8 validation on (as Conduit and ws do), sends not
 * split below the message size, lws's default buffers unless BUFFER is given.
 * The event loop is lws's default (poll) unless the second argument names
 * one of Debian's event-library plugins.
 */
#define _GNU_SOURCE
#include <libwebsockets.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct msg {
	unsigned refs;
	unsigned binary;
	size_t len;
	unsigned char buf[]; /* LWS_PRE + len */
};

struct room;

struct pss {
	struct lws *wsi;
	int kind;              /* 0 unknown, 1 echo, 2 native */
	struct room *room;
	size_t room_idx;
	struct msg **q;        /* ring of pending messages */
	unsigned qcap, qhead, qlen;
	unsigned char *rx;     /* a message arriving in pieces */
	size_t rxlen, rxcap;
	int rxbin;
};

struct room {
	struct room *next;
	char *name;
	struct pss **members;
	size_t n, cap;
};

static struct room *rooms;

static void *xrealloc(void *p, size_t n)
{
	void *r = realloc(p, n);
	if (!r) { fprintf(stderr, "lws_server: out of memory\n"); abort(); }
	return r;
}

static struct msg *msg_new(const void *data, size_t len, int binary)
{
	struct msg *m = xrealloc(NULL, sizeof *m + LWS_PRE + len);
	m->refs = 0;
	m->binary = (unsigned)binary;
	m->len = len;
	memcpy(m->buf + LWS_PRE, data, len);
	return m;
}

static void msg_unref(struct msg *m)
{
	if (--m->refs == 0) free(m);
}

static void enqueue(struct pss *p, struct msg *m)
{
	if (p->qlen == p->qcap) {
		unsigned ncap = p->qcap ? p->qcap * 2 : 16;
		struct msg **nq = xrealloc(NULL, ncap * sizeof *nq);
		for (unsigned i = 0; i < p->qlen; i++)
			nq[i] = p->q[(p->qhead + i) & (p->qcap - 1)];
		free(p->q);
		p->q = nq;
		p->qcap = ncap;
		p->qhead = 0;
	}
	p->q[(p->qhead + p->qlen) & (p->qcap - 1)] = m;
	m->refs++;
	if (p->qlen++ == 0)
		lws_callback_on_writable(p->wsi);
}

static struct room *room_get(const char *name, size_t len, int create)
{
	for (struct room *r = rooms; r; r = r->next)
		if (strlen(r->name) == len && !memcmp(r->name, name, len))
			return r;
	if (!create)
		return NULL;
	struct room *r = xrealloc(NULL, sizeof *r);
	memset(r, 0, sizeof *r);
	r->name = xrealloc(NULL, len + 1);
	memcpy(r->name, name, len);
	r->name[len] = '\0';
	r->next = rooms;
	rooms = r;
	return r;
}

static void room_join(struct room *r, struct pss *p)
{
	if (r->n == r->cap) {
		r->cap = r->cap ? r->cap * 2 : 64;
		r->members = xrealloc(r->members, r->cap * sizeof *r->members);
	}
	p->room = r;
	p->room_idx = r->n;
	r->members[r->n++] = p;
}

static void room_leave(struct pss *p)
{
	struct room *r = p->room;
	if (!r)
		return;
	struct pss *last = r->members[--r->n];
	r->members[p->room_idx] = last;
	last->room_idx = p->room_idx;
	p->room = NULL;
}

/* The channel of a publish, read from the JSON envelope without a tree. */
static int find_channel(const char *s, size_t len, const char **name, size_t *nlen)
{
	static const char key[] = "\"channel\"";
	const char *end = s + len;
	const char *k = memmem(s, len, key, sizeof key - 1);
	if (!k)
		return -1;
	const char *c = k + sizeof key - 1;
	while (c < end && (*c == ' ' || *c == '\t' || *c == '\n' || *c == '\r')) c++;
	if (c >= end || *c++ != ':')
		return -1;
	while (c < end && (*c == ' ' || *c == '\t' || *c == '\n' || *c == '\r')) c++;
	if (c >= end || *c++ != '"')
		return -1;
	const char *q = memchr(c, '"', (size_t)(end - c));
	if (!q)
		return -1;
	*name = c;
	*nlen = (size_t)(q - c);
	return 0;
}

static void on_message(struct pss *p, const unsigned char *data, size_t len, int binary)
{
	if (p->kind == 1) {
		enqueue(p, msg_new(data, len, binary));
		return;
	}
	const char *name;
	size_t nlen;
	if (binary || find_channel((const char *)data, len, &name, &nlen))
		return;
	struct room *r = room_get(name, nlen, 0);
	if (!r || r->n == 0)
		return;
	struct msg *m = msg_new(data, len, 0);
	m->refs = 1; /* held while fanning out */
	for (size_t i = 0; i < r->n; i++)
		enqueue(r->members[i], m);
	msg_unref(m);
}

static int callback(struct lws *wsi, enum lws_callback_reasons reason,
		    void *user, void *in, size_t len)
{
	struct pss *p = user;
	char uri[256];

	switch (reason) {
	case LWS_CALLBACK_ESTABLISHED: {
		memset(p, 0, sizeof *p);
		p->wsi = wsi;
		int n = lws_hdr_copy(wsi, uri, sizeof uri, WSI_TOKEN_GET_URI);
		if (n <= 0)
			return -1;
		char *qm = strchr(uri, '?');
		if (qm)
			*qm = '\0';
		if (!strcmp(uri, "/echo")) {
			p->kind = 1;
		} else if (!strcmp(uri, "/ws")) {
			p->kind = 2;
		} else if (!strncmp(uri, "/ws/", 4) && uri[4]) {
			p->kind = 2;
			room_join(room_get(uri + 4, strlen(uri + 4), 1), p);
		} else {
			return -1;
		}
		break;
	}

	case LWS_CALLBACK_RECEIVE: {
		int final = lws_is_final_fragment(wsi) &&
			    !lws_remaining_packet_payload(wsi);
		if (final && p->rxlen == 0) { /* the usual case: all in one piece */
			on_message(p, in, len, lws_frame_is_binary(wsi));
			break;
		}
		if (p->rxlen == 0)
			p->rxbin = lws_frame_is_binary(wsi);
		if (p->rxlen + len > p->rxcap) {
			p->rxcap = (p->rxlen + len) * 2;
			p->rx = xrealloc(p->rx, p->rxcap);
		}
		memcpy(p->rx + p->rxlen, in, len);
		p->rxlen += len;
		if (final) {
			on_message(p, p->rx, p->rxlen, p->rxbin);
			p->rxlen = 0;
			if (p->rxcap > 65536) {
				free(p->rx);
				p->rx = NULL;
				p->rxcap = 0;
			}
		}
		break;
	}

	case LWS_CALLBACK_SERVER_WRITEABLE: {
		if (!p->qlen)
			break;
		struct msg *m = p->q[p->qhead];
		p->qhead = (p->qhead + 1) & (p->qcap - 1);
		p->qlen--;
		/* A partial send is kept by lws and finished before the next
		 * writeable callback. */
		int n = lws_write(wsi, m->buf + LWS_PRE, m->len,
				  m->binary ? LWS_WRITE_BINARY : LWS_WRITE_TEXT);
		msg_unref(m);
		if (n < 0)
			return -1;
		if (p->qlen)
			lws_callback_on_writable(wsi);
		break;
	}

	case LWS_CALLBACK_CLOSED:
		room_leave(p);
		while (p->qlen) {
			msg_unref(p->q[p->qhead]);
			p->qhead = (p->qhead + 1) & (p->qcap - 1);
			p->qlen--;
		}
		free(p->q);
		free(p->rx);
		p->q = NULL;
		p->rx = NULL;
		break;

	default:
		break;
	}
	return 0;
}

static struct lws_protocols protocols[] = {
	{
		.name = "conduit-bench",
		.callback = callback,
		.per_session_data_size = sizeof(struct pss),
		.rx_buffer_size = 0,          /* lws's default */
		.tx_packet_size = 1 << 20,    /* do not split sends */
	},
	{ NULL, NULL, 0, 0, 0, NULL, 0 }
};

int main(int argc, char **argv)
{
	struct lws_context_creation_info info;
	const char *loop = argc > 2 ? argv[2] : "poll";

	/* Buffers: by default lws's own (4 KiB reads into a 4 KiB
	 * per-connection receive buffer).  BUFFER sets both the service read
	 * buffer and the per-connection receive buffer: 64 KiB makes 16 KiB
	 * messages faster and every idle connection 64 KiB bigger. */
	long bufsz = argc > 3 ? atol(argv[3]) : 0;

	memset(&info, 0, sizeof info);
	info.port = argc > 1 ? atoi(argv[1]) : 8080;
	info.iface = "127.0.0.1";
	info.protocols = protocols;
	info.extensions = NULL;
	info.gid = -1;
	info.uid = -1;
	info.count_threads = 1;
	info.max_http_header_pool = 256;
	if (bufsz > 0) {
		protocols[0].rx_buffer_size = (size_t)bufsz;
		info.pt_serv_buf_size = (unsigned)bufsz;
	}
	info.options = LWS_SERVER_OPTION_VALIDATE_UTF8 |
		       LWS_SERVER_OPTION_DISABLE_IPV6;
	if (!strcmp(loop, "ev"))
		info.options |= LWS_SERVER_OPTION_LIBEV;
	else if (!strcmp(loop, "uv"))
		info.options |= LWS_SERVER_OPTION_LIBUV;
	else if (strcmp(loop, "poll")) {
		fprintf(stderr, "usage: lws_server PORT [poll|ev|uv [BUFFER]]\n");
		return 2;
	}

	lws_set_log_level(LLL_ERR | LLL_WARN, NULL);
	signal(SIGPIPE, SIG_IGN); /* SIGTERM ends it */

	struct lws_context *ctx = lws_create_context(&info);
	if (!ctx) {
		fprintf(stderr, "lws_server: lws_create_context failed\n");
		return 1;
	}
	fprintf(stderr, "lws_server: libwebsockets %s listening on 127.0.0.1:%d (%s)\n",
		lws_get_library_version(), info.port, loop);
	while (lws_service(ctx, 0) >= 0)
		;
	lws_context_destroy(ctx);
	return 0;
}
