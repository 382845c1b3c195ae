#include "kms/broker/pod_lookup.h"

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "kms/broker/attestation_policy.h"
#include "kms/broker/refusal.h"

namespace sealvol::broker {
namespace {

using nlohmann::json;

// doc[key], or null when `doc` is no object or has no such member (the
// const operator[] of nlohmann::json must not be asked for a missing key).
const json& Member(const json& doc, const char* key) {
  static const json kNull;
  if (!doc.is_object()) return kNull;
  auto it = doc.find(key);
  return it == doc.end() ? kNull : *it;
}

// The string at `doc`/`a`/`b`, or "" when absent or not a string.
std::string StringAt(const json& doc, const char* a, const char* b) {
  const json& value = Member(Member(doc, a), b);
  return value.is_string() ? value.get<std::string>() : "";
}

absl::Status Unanswered(std::string_view what, const ApiServerAnswer& answer) {
  return RefusalStatus(
      Reason::kApiServerFailed,
      absl::StrCat("API server answered HTTP ", answer.status, " to GET ",
                   std::string(what),
                   answer.body.is_discarded() ? " (not JSON)" : ""));
}

}  // namespace

PodLookup::PodLookup(PodLookupOptions options)
    : options_(std::move(options)), api_server_(options_.api_server) {}

absl::StatusOr<std::string> PodLookup::BoundVolumeOf(
    const std::string& namespace_name, const std::string& claim) const {
  if (!IsKubernetesName(claim)) return "";
  const std::string path = absl::StrCat(
      "/api/v1/namespaces/", namespace_name, "/persistentvolumeclaims/", claim);
  auto answer = api_server_.Get(path);
  if (!answer.ok()) {
    return RefusalStatus(Reason::kApiServerFailed, std::string(answer.status().message()));
  }
  if (answer->status == 404) return "";
  if (answer->status != 200 || !answer->body.is_object()) {
    return Unanswered(path, *answer);
  }
  if (StringAt(answer->body, "status", "phase") != "Bound") return "";
  return StringAt(answer->body, "spec", "volumeName");
}

absl::StatusOr<ObservedPod> PodLookup::Observe(
    const PodIdentity& pod, std::string_view volume_id) const {
  if (!IsKubernetesName(pod.namespace_name) || !IsKubernetesName(pod.name)) {
    return RefusalStatus(
        Reason::kInvalidRequest,
        absl::StrCat("pod.namespace '", pod.namespace_name.substr(0, 64),
                     "' or pod.name '", pod.name.substr(0, 64),
                     "' is not a Kubernetes object name"));
  }
  const std::string path = absl::StrCat("/api/v1/namespaces/",
                                        pod.namespace_name, "/pods/", pod.name);
  auto answer = api_server_.Get(path);
  if (!answer.ok()) {
    return RefusalStatus(Reason::kApiServerFailed, std::string(answer.status().message()));
  }
  if (answer->status == 404) {
    return RefusalStatus(Reason::kPodNotFound,
                         absl::StrCat("the API server has no pod ",
                                      pod.namespace_name, "/", pod.name));
  }
  if (answer->status != 200 || !answer->body.is_object()) {
    return Unanswered(path, *answer);
  }
  const json& doc = answer->body;
  ObservedPod out;
  out.name = StringAt(doc, "metadata", "name");
  out.namespace_name = StringAt(doc, "metadata", "namespace");
  out.uid = StringAt(doc, "metadata", "uid");
  out.service_account = StringAt(doc, "spec", "serviceAccountName");
  out.node_name = StringAt(doc, "spec", "nodeName");
  out.phase = StringAt(doc, "status", "phase");
  out.terminating = !Member(Member(doc, "metadata"), "deletionTimestamp").is_null();
  out.mirror = !Member(Member(Member(doc, "metadata"), "annotations"),
                       "kubernetes.io/config.mirror")
                    .is_null();
  if (out.name != pod.name || out.namespace_name != pod.namespace_name) {
    return RefusalStatus(Reason::kApiServerFailed,
                         absl::StrCat("GET ", path, " answered pod ",
                                      out.namespace_name.substr(0, 64), "/",
                                      out.name.substr(0, 64)));
  }

  // Which of the pod's claims is bound to this volume.
  const json& volumes = Member(Member(doc, "spec"), "volumes");
  if (!volumes.is_array()) return out;
  for (const json& volume : volumes) {
    if (!volume.is_object()) continue;
    std::string claim = StringAt(volume, "persistentVolumeClaim", "claimName");
    if (claim.empty() && Member(volume, "ephemeral").is_object() &&
        Member(volume, "name").is_string()) {
      // A generic ephemeral volume's claim is named POD-VOLUME.
      claim = absl::StrCat(pod.name, "-", Member(volume, "name").get<std::string>());
    }
    if (claim.empty()) continue;
    ASSIGN_OR_RETURN(auto pv_name, BoundVolumeOf(pod.namespace_name, claim));
    if (pv_name.empty() || !IsKubernetesName(pv_name)) continue;
    const std::string pv_path =
        absl::StrCat("/api/v1/persistentvolumes/", pv_name);
    auto pv = api_server_.Get(pv_path);
    if (!pv.ok()) {
      return RefusalStatus(Reason::kApiServerFailed, std::string(pv.status().message()));
    }
    if (pv->status == 404) continue;
    if (pv->status != 200 || !pv->body.is_object()) {
      return Unanswered(pv_path, *pv);
    }
    const json& spec = Member(pv->body, "spec");
    if (!spec.is_object() || StringAt(spec, "csi", "driver") != options_.driver ||
        StringAt(spec, "csi", "volumeHandle") != volume_id) {
      continue;
    }
    // The PV must be bound back to this very claim, not merely name it.
    if (StringAt(spec, "claimRef", "namespace") != pod.namespace_name ||
        StringAt(spec, "claimRef", "name") != claim) {
      continue;
    }
    out.claim = claim;
    const json& mode = Member(spec, "volumeMode");
    // Filesystem is the API's default when the field is absent.
    out.volume_mode = mode.is_string() ? mode.get<std::string>() : "Filesystem";
    break;
  }
  return out;
}

}  // namespace sealvol::broker
