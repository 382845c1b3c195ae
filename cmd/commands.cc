#include "cmd/commands.h"

#include "cmd/audit_commands.h"
#include "cmd/csi_commands.h"
#include "cmd/import_command.h"
#include "cmd/key_commands.h"
#include "cmd/mount_commands.h"
#include "cmd/token_commands.h"
#include "cmd/volume_commands.h"

namespace sealvol::cmd {

void RegisterAllCommands(CLI::App& app, int& exit_code) {
  RegisterCsiCommands(app, exit_code);
  RegisterMountCommands(app, exit_code);
  RegisterTokenCommands(app, exit_code);
  RegisterAuditCommands(app, exit_code);
  RegisterVolumeCommands(app, exit_code);
  RegisterImportCommand(app, exit_code);
  RegisterKeyCommands(app, exit_code);
}

}  // namespace sealvol::cmd
