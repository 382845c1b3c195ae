// Test helper: creates a fresh data key for an existing volume id in a local
// key provider, so a test can open an image with a key that is not its own.
// Usage: create_key_helper STATE_DIR VOLUME_ID
#include <cstdio>

#include "kms/key_provider.h"

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: %s STATE_DIR VOLUME_ID\n", argv[0]);
    return 2;
  }
  auto provider = sealvol::kms::OpenKeyProvider(std::string("local:") + argv[1]);
  if (!provider.ok()) {
    std::fprintf(stderr, "%s\n", provider.status().ToString().c_str());
    return 1;
  }
  sealvol::kms::CreateVolumeKeyRequest request;
  request.volume_id = argv[2];
  request.tenant = "default";
  auto record = (*provider)->CreateVolumeKey(request);
  if (!record.ok()) {
    std::fprintf(stderr, "%s\n", record.status().ToString().c_str());
    return 1;
  }
  return 0;
}
