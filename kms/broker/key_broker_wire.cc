#include "kms/broker/key_broker_wire.h"

namespace sealvol::broker {

v1::ReleaseKeyRequest ReleaseRequestToProto(const ReleaseRequest& request) {
  v1::ReleaseKeyRequest out;
  out.set_volume_id(request.volume_id);
  out.set_node_id(request.node_id);
  out.set_pod_token(request.pod_token);
  v1::PodInfo* pod = out.mutable_pod();
  pod->set_name(request.pod.name);
  pod->set_namespace_(request.pod.namespace_name);
  pod->set_uid(request.pod.uid);
  pod->set_service_account(request.pod.service_account);
  return out;
}

ReleaseRequest ReleaseRequestFromProto(const v1::ReleaseKeyRequest& request) {
  ReleaseRequest out;
  out.volume_id = request.volume_id();
  out.node_id = request.node_id();
  out.pod_token = request.pod_token();
  out.pod.name = request.pod().name();
  out.pod.namespace_name = request.pod().namespace_();
  out.pod.uid = request.pod().uid();
  out.pod.service_account = request.pod().service_account();
  return out;
}

}  // namespace sealvol::broker
