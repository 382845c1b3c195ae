// Log lines of the long-running processes (controller, node) carry values
// from requests and tokens: pod names, paths, volume ids, refusal messages.
// EscapeLogMessages makes every line of the default spdlog logger print its
// message with control characters escaped (\n, \r, \t, \xNN) and
// backslashes doubled, so no value can forge a line or hide a part of one.
// Call once at start-up, before other threads log.
#pragma once

#include <string>
#include <string_view>

namespace sealvol::cmd {

// `text` with bytes below 0x20, 0x7f and '\' escaped.
std::string EscapeControlCharacters(std::string_view text);

void EscapeLogMessages();

}  // namespace sealvol::cmd
