/* proto.h - the native protocol: client messages in, hub operations and
 * replies out (docs/protocol.md).
 *
 * proto_json.c implements the JSON encoding.  It sees a connection only
 * through the functions of conn.h and the hub through hub.h. */
#ifndef CD_PROTO_H
#define CD_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "server.h"

#define CD_PROTO_JSON "conduit.v1.json"

/* Per-connection protocol state, embedded in the connection. */
typedef struct cd_proto_state {
    uint64_t typing_window_start_ms;
    uint32_t typing_count;           /* typing events in the current window */
    bool has_hello;
} cd_proto_state;

/* Handle one complete text message from a native connection. */
void cd_proto_json_message(cd_conn *c, const uint8_t *data, size_t len);

/* A native connection has opened: join `room` if the path named one (len
 * 0: none), count the user online, run the application's on_open. */
void cd_proto_json_open(cd_conn *c, const char *room, size_t len);

/* Hub callback: frame a presence event. */
cd_frame *cd_proto_json_presence_frame(void *ctx, const char *channel,
                                       size_t len, const char *user,
                                       const char *state);

/* Frame a publish as the server would deliver it; used by conduit_publish.
 * data must be one valid JSON value. */
typedef struct cd_proto_publish {
    const char *channel;
    size_t channel_len;
    const char *data;
    size_t data_len;
    const char *from;                /* NULL: from the server */
} cd_proto_publish;
cd_frame *cd_proto_json_message_frame(void *ctx, uint64_t offset,
                                      const char *epoch, uint64_t ts_ms);

/* Frame an error reply: {"type":"error","id":...,"error":{...}}. */
cd_frame *cd_proto_json_error_frame(const char *id, size_t id_len,
                                    const char *code, const char *message);

/* Frame a warning: {"type":"warning","code":...,"message":...} plus one
 * numeric member num_key (NULL: none). */
cd_frame *cd_proto_json_warning_frame(const char *code, const char *message,
                                      const char *num_key, uint64_t num);

/* Wrap a JSON text in one unmasked text frame. */
cd_frame *cd_proto_text_frame(const void *text, size_t len);

#endif
