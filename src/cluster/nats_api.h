// libnats (nats.c and its libprotobuf-c), loaded when a daemon with cluster_nats connects instead of
// at every start: linked, it and the libssl/libcrypto it needs were mapped and relocated by every
// fnexec process (`fnexec run` included). Only the functions src/cluster calls are resolved.
#pragma once

#include <nats/nats.h>

#include "util/error.h"

namespace fnexec::cluster {

// Every nats.c function src/cluster calls; a member of NatsApi is named after its function.
#define FNEXEC_NATS_FUNCTIONS(X) \
  X(jsConsumerConfig_Init) \
  X(jsConsumerInfo_Destroy) \
  X(jsCtx_Destroy) \
  X(jsFetchRequest_Init) \
  X(jsMsgMetaData_Destroy) \
  X(jsOptions_Init) \
  X(jsPubAck_Destroy) \
  X(jsPubOptions_Init) \
  X(jsStreamConfig_Init) \
  X(jsStreamInfo_Destroy) \
  X(jsSubOptions_Init) \
  X(js_AddConsumer) \
  X(js_AddStream) \
  X(js_CreateKeyValue) \
  X(js_DeleteMsg) \
  X(js_GetLastMsg) \
  X(js_GetMsg) \
  X(js_GetStreamInfo) \
  X(js_KeyValue) \
  X(js_PublishAsyncComplete) \
  X(js_PublishMsg) \
  X(js_PublishMsgAsync) \
  X(js_PullSubscribe) \
  X(js_UpdateConsumer) \
  X(kvConfig_Init) \
  X(kvEntry_Destroy) \
  X(kvEntry_Key) \
  X(kvEntry_Operation) \
  X(kvEntry_Revision) \
  X(kvEntry_Value) \
  X(kvEntry_ValueLen) \
  X(kvKeysList_Destroy) \
  X(kvStore_Delete) \
  X(kvStore_Destroy) \
  X(kvStore_Get) \
  X(kvStore_Keys) \
  X(kvStore_Put) \
  X(kvStore_WatchAll) \
  X(kvWatcher_Destroy) \
  X(kvWatcher_Next) \
  X(kvWatcher_Stop) \
  X(natsConnection_Close) \
  X(natsConnection_Connect) \
  X(natsConnection_Destroy) \
  X(natsConnection_GetConnectedUrl) \
  X(natsConnection_GetMaxPayload) \
  X(natsConnection_JetStream) \
  X(natsConnection_PublishMsg) \
  X(natsConnection_QueueSubscribe) \
  X(natsConnection_Subscribe) \
  X(natsInbox_Create) \
  X(natsInbox_Destroy) \
  X(natsMsgHeader_Get) \
  X(natsMsgHeader_Set) \
  X(natsMsgList_Destroy) \
  X(natsMsg_Ack) \
  X(natsMsg_AckSync) \
  X(natsMsg_Create) \
  X(natsMsg_Destroy) \
  X(natsMsg_GetData) \
  X(natsMsg_GetDataLength) \
  X(natsMsg_GetMetaData) \
  X(natsMsg_GetReply) \
  X(natsMsg_GetSequence) \
  X(natsMsg_GetSubject) \
  X(natsMsg_GetTime) \
  X(natsMsg_IsNoResponders) \
  X(natsMsg_NakWithDelay) \
  X(natsOptions_Create) \
  X(natsOptions_Destroy) \
  X(natsOptions_LoadCATrustedCertificates) \
  X(natsOptions_LoadCertificatesChain) \
  X(natsOptions_SetClosedCB) \
  X(natsOptions_SetDisconnectedCB) \
  X(natsOptions_SetErrorHandler) \
  X(natsOptions_SetMaxReconnect) \
  X(natsOptions_SetName) \
  X(natsOptions_SetReconnectBufSize) \
  X(natsOptions_SetReconnectWait) \
  X(natsOptions_SetReconnectedCB) \
  X(natsOptions_SetSecure) \
  X(natsOptions_SetSendAsap) \
  X(natsOptions_SetServers) \
  X(natsOptions_SetUserCredentialsFromFiles) \
  X(natsOptions_SetUserInfo) \
  X(natsStatus_GetText) \
  X(natsSubscription_Destroy) \
  X(natsSubscription_FetchRequest) \
  X(natsSubscription_SetOnCompleteCB) \
  X(natsSubscription_Unsubscribe) \
  X(nats_GetLastError)

struct NatsApi {
#define FNEXEC_NATS_MEMBER(name) decltype(&::name) name = nullptr;
  FNEXEC_NATS_FUNCTIONS(FNEXEC_NATS_MEMBER)
#undef FNEXEC_NATS_MEMBER
};

// Loads libnats once per process (thread-safe); the error names the library and its package.
Result<const NatsApi*> load_nats();

// The loaded library: only after load_nats() succeeded, which Connection::open ensures (every other
// caller holds a Connection).
const NatsApi& natslib();

}  // namespace fnexec::cluster
