#!/bin/sh
# A shell pipeline as a mesh service: forward the lines published on topic "logs"
# that match PATTERN (default ERROR) to topic "alerts", on the node at
# $P2PNODE_SOCKET (or the default socket). Runs until Ctrl-C, or until the node
# stops (recv then says "node at SOCKET stopped" on standard error).
#
#   examples/relay.sh                 # on one machine
#   tail -F /var/log/app.log | p2pnode send --topic logs      # anywhere in the mesh
#   p2pnode recv --topic alerts                                 # anywhere else
#
# `recv --data` prints only each message's text, as it is: what grep and send want.
set -eu
pattern=${1:-ERROR}
p2pnode recv --data --topic logs | grep --line-buffered -e "$pattern" | p2pnode send --topic alerts
