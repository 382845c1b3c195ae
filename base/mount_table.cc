#include "base/mount_table.h"

#include <cerrno>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <utility>

#include "base/status_macros.h"

namespace sealvol {

namespace {

bool IsOctal(char c) { return c >= '0' && c <= '7'; }

std::string Unescape(const std::string& field) {
  std::string out;
  out.reserve(field.size());
  for (size_t i = 0; i < field.size(); ++i) {
    if (field[i] == '\\' && i + 3 < field.size() && IsOctal(field[i + 1]) &&
        IsOctal(field[i + 2]) && IsOctal(field[i + 3])) {
      out.push_back(static_cast<char>((field[i + 1] - '0') * 64 +
                                      (field[i + 2] - '0') * 8 +
                                      (field[i + 3] - '0')));
      i += 3;
      continue;
    }
    out.push_back(field[i]);
  }
  return out;
}

}  // namespace

std::vector<MountEntry> ParseMountInfo(const std::string& text) {
  std::vector<MountEntry> entries;
  std::istringstream lines(text);
  std::string line;
  while (std::getline(lines, line)) {
    // id parent major:minor root mount_point options [optional...] - fstype
    // source super_options
    std::istringstream words(line);
    std::vector<std::string> fields;
    for (std::string word; words >> word;) fields.push_back(std::move(word));
    if (fields.size() < 9) continue;
    size_t dash = 6;
    while (dash < fields.size() && fields[dash] != "-") ++dash;
    if (dash + 2 >= fields.size()) continue;
    MountEntry entry;
    char end = 0;
    if (std::sscanf(fields[2].c_str(), "%u:%u%c", &entry.major, &entry.minor,
                    &end) != 2) {
      continue;
    }
    entry.root = Unescape(fields[3]);
    entry.mount_point = Unescape(fields[4]);
    entry.fs_type = Unescape(fields[dash + 1]);
    entry.source = Unescape(fields[dash + 2]);
    entries.push_back(std::move(entry));
  }
  return entries;
}

absl::StatusOr<std::vector<MountEntry>> ReadMountTable() {
  constexpr char kPath[] = "/proc/self/mountinfo";
  std::ifstream in(kPath);
  if (!in) return ErrnoStatus(errno, "read", kPath);
  std::stringstream text;
  text << in.rdbuf();
  return ParseMountInfo(text.str());
}

}  // namespace sealvol
