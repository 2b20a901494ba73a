#!/bin/sh
# A shell pipeline as a mesh service: forward the lines published on topic "logs"
# that match PATTERN (default ERROR) to topic "alerts", on the node at
# $P2PNODE_SOCKET (or the default socket). Runs until the node stops or Ctrl-C.
#
#   examples/relay.sh                 # on one machine
#   tail -F /var/log/app.log | p2pnode send --topic logs      # anywhere in the mesh
#   p2pnode recv --topic alerts                                 # anywhere else
set -eu
pattern=${1:-ERROR}
p2pnode recv --topic logs | grep --line-buffered -e "$pattern" | p2pnode send --topic alerts
