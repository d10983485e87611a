/* errors.c - the text of the one error vocabulary (conduit.h). */
#include "conduit.h"

CONDUIT_API const char *conduit_strerror(int err)
{
    switch (err) {
    case CONDUIT_OK:
        return "success";
#define CD_ERR_TEXT_(name, code, msg) \
    case CONDUIT_##name:              \
        return msg;
        CONDUIT_ERRORS(CD_ERR_TEXT_)
#undef CD_ERR_TEXT_
    default:
        return "unknown error";
    }
}

CONDUIT_API const char *conduit_err_name(int err)
{
    switch (err) {
    case CONDUIT_OK:
        return "CONDUIT_OK";
#define CD_ERR_NAME_(name, code, msg) \
    case CONDUIT_##name:              \
        return "CONDUIT_" #name;
        CONDUIT_ERRORS(CD_ERR_NAME_)
#undef CD_ERR_NAME_
    default:
        return "CONDUIT_UNKNOWN";
    }
}

CONDUIT_API const char *conduit_version(void)
{
    return CONDUIT_VERSION;
}
