// File helpers that never leave a half-written file where a good one was.
#pragma once
#include <string>

namespace loco {

// Writes to "<path>.tmp-<pid>", fsyncs, then renames over `path`. Throws loco::Error naming
// the path and the OS error on failure; the previous file, if any, is untouched.
void write_file_atomic(const std::string& path, const std::string& content);

// Creates a directory and its parents; error names the directory and the OS reason.
void make_directories(const std::string& dir);

std::string read_file(const std::string& path);  // error names the file

// True when `a` and `b` name the same file: the same inode when both exist (so hard and
// symbolic links count), else the same absolute path once symbolic links in the existing
// part of each path are resolved.
bool same_file(const std::string& a, const std::string& b);

}  // namespace loco
