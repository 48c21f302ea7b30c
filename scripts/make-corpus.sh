#!/usr/bin/env bash
# Regenerates the bundled corpus: data/kjv.txt (the King James Bible, plain text) and its
# byte-tokenized llm.c shards data/kjv-train.bin / data/kjv-val.bin (last ~5% as validation,
# cut at a line boundary). Deterministic: the same bible-kjv package gives the same bytes.
#
# Needs the Debian packages bible-kjv and bible-kjv-text (apt-get install bible-kjv) and perl.
# Usage: scripts/make-corpus.sh [output-dir]   (default: data/ next to this script)
#
# The split rule is the one in src/data/tokenizer.cpp (tokenize_text_file), which the tests
# check against these files: n = text bytes, target = floor(n * (1 - 0.05)); the cut is the
# first line start (just after a '\n', strictly inside the text) at or after target, else the
# last one before it. Shards: 256 little-endian int32 header [20240520, 1, count, 0...], then
# one little-endian uint16 per byte.
set -euo pipefail
export LC_ALL=C

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="${1:-$here/../data}"
val_fraction=0.05

if ! command -v bible >/dev/null 2>&1 || [[ ! -r /usr/lib/bible.data ]]; then
  echo "make-corpus: needs the bible program and its text: apt-get install bible-kjv" >&2
  exit 1
fi
version="$(dpkg-query -W -f='${Version}' bible-kjv-text 2>/dev/null || echo unknown)"
if [[ "$version" != "4.38" ]]; then
  echo "make-corpus: warning: bible-kjv-text is $version, data/README.md describes 4.38" >&2
fi

mkdir -p "$out"
cd "$out"
# -p /usr/lib: read the packaged text even if a bible.data lies in the current directory.
# -l 10000: pretty-printed (book/chapter headings, numbered verses) with no line wrapping
# (the longest verse line is 532 bytes).
bible -p /usr/lib -l 10000 'Gen1:1-Rev22:21' >kjv.txt.tmp
mv kjv.txt.tmp kjv.txt

perl -e '
  use strict; use warnings;
  my ($in, $train, $val, $frac) = @ARGV;
  open(my $fh, "<:raw", $in) or die "$in: $!";
  local $/; my $text = <$fh>; close $fh;
  my $n = length $text;
  my $target = int($n * (1.0 - $frac));
  my $cut = 0;
  my $nl = index($text, "\n", $target > 0 ? $target - 1 : 0);
  if ($nl >= 0 && $nl + 1 < $n) { $cut = $nl + 1; }
  elsif ($target >= 2) { $nl = rindex($text, "\n", $target - 2); $cut = $nl + 1 if $nl >= 0; }
  die "no line boundary to split at\n" if $cut <= 0 || $cut >= $n;
  sub shard {
    my ($path, $bytes) = @_;
    my $count = length $bytes;
    open(my $o, ">:raw", "$path.tmp") or die "$path.tmp: $!";
    print $o pack("l<3", 20240520, 1, $count), "\0" x (253 * 4);
    print $o pack("v*", unpack("C*", $bytes));
    close $o or die "$path.tmp: $!";
    rename("$path.tmp", $path) or die "$path: $!";
    printf "%-13s %9d tokens (%d bytes)\n", $path, $count, 1024 + 2 * $count;
  }
  printf "%-13s %9d bytes, cut at byte %d (target %d)\n", $in, $n, $cut, $target;
  shard($train, substr($text, 0, $cut));
  shard($val, substr($text, $cut));
' kjv.txt kjv-train.bin kjv-val.bin "$val_fraction"

sha256sum kjv.txt kjv-train.bin kjv-val.bin
