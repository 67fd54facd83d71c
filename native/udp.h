/* The native UDP relay (udp.c): registers its functions on the addon's exports. */
#ifndef KUP_UDP_H
#define KUP_UDP_H
#include <node_api.h>
void kup_udp_register(napi_env env, napi_value exports);
#endif
