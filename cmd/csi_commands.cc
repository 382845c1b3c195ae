#include "cmd/csi_commands.h"

#include "cmd/controller_command.h"
#include "cmd/csi_client_command.h"
#include "cmd/node_command.h"

namespace sealvol::cmd {

void RegisterCsiCommands(CLI::App& app, int& exit_code) {
  RegisterControllerCommand(app, exit_code);
  RegisterNodeCommand(app, exit_code);
  RegisterCsiClientCommand(app, exit_code);
}

}  // namespace sealvol::cmd
