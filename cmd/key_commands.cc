#include "cmd/key_commands.h"

#include <cstdio>
#include <iostream>
#include <memory>
#include <string>

#include "cmd/exit_codes.h"
#include "cmd/kms_flags.h"
#include "kms/key_provider.h"
#include "nlohmann/json.hpp"

namespace sealvol::cmd {
namespace {

struct KeyArgs {
  KmsFlags keys;
  std::string tenant;
  std::string volume_id;
  bool yes = false;
};

int Fail(const char* command, const absl::Status& s) {
  return cmd::Fail(command, s, CommandFamily::kKey);
}

// A record as shown to operators: everything but the wrapped key.
nlohmann::json Describe(const kms::VolumeRecord& r) {
  nlohmann::json params = nlohmann::json::object();
  for (const auto& [k, v] : r.parameters) params[k] = v;
  return {{"volume_id", r.volume_id},
          {"name", r.name},
          {"tenant", r.tenant},
          {"key_name", r.key_name},
          {"key_version", r.key_version},
          {"capacity_bytes", r.capacity_bytes},
          {"node", r.node},
          {"parameters", params},
          {"created_unix", r.created_unix},
          {"format_id", r.format_id},
          {"formatted_node", r.formatted_node},
          {"formatted_unix", r.formatted_unix}};
}

void Print(const nlohmann::json& j) {
  std::cout << j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace)
            << "\n";
}

int RunList(const KeyArgs& args) {
  auto provider = args.keys.OpenProvider();
  if (!provider.ok()) return Fail("keys list", provider.status());
  auto records = (*provider)->ListVolumes(args.tenant);
  if (!records.ok()) return Fail("keys list", records.status());
  nlohmann::json out = nlohmann::json::array();
  for (const auto& r : *records) out.push_back(Describe(r));
  Print(out);
  return kExitOk;
}

int RunShow(const KeyArgs& args) {
  auto provider = args.keys.OpenProvider();
  if (!provider.ok()) return Fail("keys show", provider.status());
  auto record = (*provider)->GetVolume(args.volume_id);
  if (!record.ok()) return Fail("keys show", record.status());
  nlohmann::json out = Describe(*record);
  out["kms"] = (*provider)->Describe();
  Print(out);
  return kExitOk;
}

int RunDestroy(const KeyArgs& args) {
  if (!args.yes) {
    std::fprintf(stderr,
                 "sealvol keys destroy: this destroys the only key of volume "
                 "%s; its data can never be read again. Pass --yes to "
                 "proceed.\n",
                 args.volume_id.c_str());
    return kExitUsage;
  }
  auto provider = args.keys.OpenProvider();
  if (!provider.ok()) return Fail("keys destroy", provider.status());
  auto record = (*provider)->GetVolume(args.volume_id);
  if (!record.ok()) return Fail("keys destroy", record.status());
  if (!args.tenant.empty() && record->tenant != args.tenant) {
    return Fail("keys destroy",
                absl::PermissionDeniedError(
                    "volume " + args.volume_id + " belongs to tenant " +
                    record->tenant + ", not " + args.tenant));
  }
  if (absl::Status s = (*provider)->DestroyVolumeKey(args.volume_id); !s.ok()) {
    return Fail("keys destroy", s);
  }
  Print({{"volume_id", args.volume_id},
         {"tenant", record->tenant},
         {"destroyed", true},
         {"kms", (*provider)->Describe()}});
  return kExitOk;
}

int RunRotate(const KeyArgs& args) {
  auto provider = args.keys.OpenProvider();
  if (!provider.ok()) return Fail("rotate", provider.status());
  auto result = (*provider)->RotateTenantKey(args.tenant);
  if (!result.ok()) return Fail("rotate", result.status());
  Print({{"tenant", args.tenant},
         {"key_name", result->key_name},
         {"new_key_version", result->new_key_version},
         {"volumes_rewrapped", result->volumes_rewrapped},
         {"kms", (*provider)->Describe()}});
  return kExitOk;
}

}  // namespace

void RegisterKeyCommands(CLI::App& app, int& exit_code) {
  auto args = std::make_shared<KeyArgs>();

  CLI::App* keys = app.add_subcommand(
      "keys", "List, show or destroy volume keys in the key provider");
  keys->require_subcommand(1);

  CLI::App* list = keys->add_subcommand(
      "list", "Print the volume records as a JSON array (no key material)");
  list->add_option("--tenant", args->tenant, "Only this namespace's volumes");
  args->keys.AddTo(list);
  list->callback([args, &exit_code] { exit_code = RunList(*args); });

  CLI::App* show = keys->add_subcommand(
      "show", "Print one volume record as JSON (no key material)");
  show->add_option("VOLUME_ID", args->volume_id)->required();
  args->keys.AddTo(show);
  show->callback([args, &exit_code] { exit_code = RunShow(*args); });

  CLI::App* destroy = keys->add_subcommand(
      "destroy",
      "Crypto-shred a volume: destroy every stored copy of its wrapped key");
  destroy->add_option("VOLUME_ID", args->volume_id)->required();
  destroy->add_option("--tenant", args->tenant,
                      "Refuse unless the volume belongs to this namespace");
  destroy->add_flag("--yes", args->yes, "Confirm the irreversible destruction");
  args->keys.AddTo(destroy);
  destroy->callback([args, &exit_code] { exit_code = RunDestroy(*args); });

  CLI::App* rotate = app.add_subcommand(
      "rotate",
      "Rotate a tenant's KEK and rewrap all its volumes' keys (no data is "
      "rewritten)");
  rotate->add_option("--tenant", args->tenant, "Namespace whose KEK rotates")
      ->required();
  args->keys.AddTo(rotate);
  rotate->callback([args, &exit_code] { exit_code = RunRotate(*args); });
}

}  // namespace sealvol::cmd
