#include "cmd/commands.h"

namespace sealvol::cmd {

void RegisterAllCommands(CLI::App& app, int& exit_code) {
  (void)app;
  (void)exit_code;
}

}  // namespace sealvol::cmd
