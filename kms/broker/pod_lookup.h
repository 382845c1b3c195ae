// PodLookup reads from the Kubernetes API server what the broker needs to
// confirm a pod that comes without a token: the kubelet sends no
// service-account token with NodePublishVolume for block volumes
// (docs/attestation.md, "Block volumes"). It only reports what the API
// server says; AttestationPolicy::CheckObservedPod decides. Thread-safe.
//
// Errors (refusal.h): invalid_request (a pod name or namespace that is not a
// Kubernetes name, so it never reaches an API path), pod_not_found (the API
// server has no such pod), api_server_failed (no answer, or an answer that
// is neither the object nor 404: the broker fails closed).
#pragma once

#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "kms/broker/api_server_client.h"

namespace sealvol::broker {

struct PodIdentity;

// A pod as the API server reports it, and how it uses one volume.
struct ObservedPod {
  std::string name;
  std::string namespace_name;
  std::string uid;              // metadata.uid
  std::string service_account;  // spec.serviceAccountName
  std::string node_name;        // spec.nodeName; empty while unscheduled.
  std::string phase;            // status.phase
  bool terminating = false;     // metadata.deletionTimestamp is set.
  // A mirror pod (annotation kubernetes.io/config.mirror): the API object of
  // a static pod that a kubelet, not the scheduler, put on its node.
  bool mirror = false;
  // The pod's PersistentVolumeClaim (a persistentVolumeClaim volume, or the
  // claim of a generic ephemeral volume) that is bound to a PersistentVolume
  // of `driver` whose volumeHandle is the volume asked about; empty when the
  // pod has none.
  std::string claim;
  std::string volume_mode;  // That PersistentVolume's spec.volumeMode.
};

struct PodLookupOptions {
  ApiServerOptions api_server;
  std::string driver = "sealvol.csi.dev";  // PV spec.csi.driver to match.
};

class PodLookup {
 public:
  explicit PodLookup(PodLookupOptions options);

  // Reads pod `pod.namespace_name`/`pod.name`, then its claims and their
  // volumes until one is `volume_id`.
  absl::StatusOr<ObservedPod> Observe(const PodIdentity& pod,
                                      std::string_view volume_id) const;

 private:
  // The PV name the claim NS/NAME is bound to, "" when it is not bound or
  // absent.
  absl::StatusOr<std::string> BoundVolumeOf(const std::string& namespace_name,
                                            const std::string& claim) const;

  const PodLookupOptions options_;
  const ApiServerClient api_server_;
};

}  // namespace sealvol::broker
