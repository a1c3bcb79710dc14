/*
 * c-chan-echo: the child of c-chan (user/c/chan.c). EXEC_HANDLES gave it one channel
 * endpoint, at id 1: it waits for one message, answers "pong" when it was "ping", and
 * exits (0 when the exchange went as expected), which closes its endpoint.
 */
#include "copra/copra.h"

int main(void) {
    char buf[16];
    struct copra_channel_message in = {.data = (uint64_t)(uintptr_t)buf, .data_len = sizeof buf};
    int64_t got = copra_recv(1, &in, COPRA_CHANNEL_FLAG_BLOCK);
    if (got != 5 || memcmp(buf, "ping", 5) != 0) {
        return 1;
    }
    static const char pong[] = "pong";
    struct copra_channel_message out = {.data = (uint64_t)(uintptr_t)pong, .data_len = sizeof pong};
    return copra_send(1, &out, 0) == 0 ? 0 : 2;
}
