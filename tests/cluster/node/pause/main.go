// The pod sandbox process of the local real node (containerd's sandbox_image): it holds the pod's
// namespaces and exits on SIGTERM or SIGINT. Built statically by tests/cluster/build.sh.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	<-stop
}
