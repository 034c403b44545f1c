# shellcheck shell=bash
# free_port [PORT...]: prints a TCP port on 127.0.0.1 that was free a moment ago and is none of
# the ports given. Two binds to port 0 in a row can return the same port once the first socket
# is closed, so a script that needs two ports passes the first when asking for the second.
free_port() {
    python3 -c 'import socket, sys
while True:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    if str(port) not in sys.argv[1:]:
        print(port)
        break' "$@"
}
