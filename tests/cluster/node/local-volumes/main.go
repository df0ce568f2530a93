// The provisioner of the local cluster's StorageClass (node.sh names it jukinet-local, binding mode
// WaitForFirstConsumer). For every claim of that class the scheduler has placed on a node, it
// creates a `local` PersistentVolume pinned to that node: on the real node a fresh directory under
// -root (the kubelet applies the pod's fsGroup to local volumes, as a CSI driver would), on a kwok
// node a path nothing mounts. A Released volume whose reclaim policy is Delete loses its directory
// and its PV. It polls (a list per second) instead of watching: the local cluster holds few claims.
// Built by tests/cluster/build.sh, started and stopped by node.sh.
package main

import (
	"context"
	"flag"
	"log"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

const (
	provisionedBy = "pv.kubernetes.io/provisioned-by"
	selectedNode  = "volume.kubernetes.io/selected-node"
)

type provisioner struct {
	client   kubernetes.Interface
	name     string // this provisioner's name, as the StorageClass's provisioner field
	class    string
	root     string
	realNode string
}

func main() {
	kubeconfig := flag.String("kubeconfig", "", "kubeconfig of the cluster")
	p := provisioner{}
	flag.StringVar(&p.name, "provisioner", "jukinet.io/local-volumes", "provisioner name")
	flag.StringVar(&p.class, "class", "jukinet-local", "StorageClass served")
	flag.StringVar(&p.root, "root", "/var/lib/jukinet/local-volumes", "directory holding the real node's volumes")
	flag.StringVar(&p.realNode, "real-node", "jukinet-node", "the node whose volumes are real directories")
	interval := flag.Duration("interval", time.Second, "time between two passes")
	flag.Parse()

	cfg, err := clientcmd.BuildConfigFromFlags("", *kubeconfig)
	if err != nil {
		log.Fatalf("kubeconfig: %v", err)
	}
	p.client = kubernetes.NewForConfigOrDie(cfg)
	if err := os.MkdirAll(p.root, 0o755); err != nil {
		log.Fatalf("root %s: %v", p.root, err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	log.Printf("serving StorageClass %s as %s (volumes of node %s under %s)", p.class, p.name, p.realNode, p.root)
	for ctx.Err() == nil {
		if err := p.provision(ctx); err != nil && ctx.Err() == nil {
			log.Printf("provision pass: %v", err)
		}
		if err := p.reclaim(ctx); err != nil && ctx.Err() == nil {
			log.Printf("reclaim pass: %v", err)
		}
		select {
		case <-ctx.Done():
		case <-time.After(*interval):
		}
	}
}

func (p *provisioner) provision(ctx context.Context) error {
	claims, err := p.client.CoreV1().PersistentVolumeClaims("").List(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	for i := range claims.Items {
		pvc := &claims.Items[i]
		node := pvc.Annotations[selectedNode]
		if pvc.Spec.VolumeName != "" || pvc.Status.Phase != corev1.ClaimPending || node == "" ||
			pvc.Spec.StorageClassName == nil || *pvc.Spec.StorageClassName != p.class {
			continue
		}
		if err := p.create(ctx, pvc, node); err != nil {
			log.Printf("claim %s/%s: %v", pvc.Namespace, pvc.Name, err)
		}
	}
	return nil
}

func (p *provisioner) create(ctx context.Context, pvc *corev1.PersistentVolumeClaim, node string) error {
	name := "pvc-" + string(pvc.UID)
	path := filepath.Join("/nonexistent/kwok", name)
	if node == p.realNode {
		path = filepath.Join(p.root, name)
		if err := os.MkdirAll(path, 0o750); err != nil {
			return err
		}
	}
	reclaim := corev1.PersistentVolumeReclaimDelete
	if class, err := p.client.StorageV1().StorageClasses().Get(ctx, p.class, metav1.GetOptions{}); err == nil &&
		class.ReclaimPolicy != nil {
		reclaim = *class.ReclaimPolicy
	}
	pv := &corev1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: map[string]string{provisionedBy: p.name}},
		Spec: corev1.PersistentVolumeSpec{
			Capacity:                      corev1.ResourceList{corev1.ResourceStorage: pvc.Spec.Resources.Requests[corev1.ResourceStorage]},
			AccessModes:                   pvc.Spec.AccessModes,
			PersistentVolumeReclaimPolicy: reclaim,
			StorageClassName:              p.class,
			VolumeMode:                    pvc.Spec.VolumeMode,
			ClaimRef: &corev1.ObjectReference{
				Kind: "PersistentVolumeClaim", APIVersion: "v1",
				Namespace: pvc.Namespace, Name: pvc.Name, UID: pvc.UID,
			},
			PersistentVolumeSource: corev1.PersistentVolumeSource{Local: &corev1.LocalVolumeSource{Path: path}},
			NodeAffinity: &corev1.VolumeNodeAffinity{Required: &corev1.NodeSelector{
				NodeSelectorTerms: []corev1.NodeSelectorTerm{{MatchExpressions: []corev1.NodeSelectorRequirement{{
					Key: "kubernetes.io/hostname", Operator: corev1.NodeSelectorOpIn, Values: []string{node},
				}}}},
			}},
		},
	}
	_, err := p.client.CoreV1().PersistentVolumes().Create(ctx, pv, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		return nil
	}
	if err == nil {
		log.Printf("claim %s/%s: created %s on node %s at %s", pvc.Namespace, pvc.Name, name, node, path)
	}
	return err
}

func (p *provisioner) reclaim(ctx context.Context) error {
	volumes, err := p.client.CoreV1().PersistentVolumes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	for i := range volumes.Items {
		pv := &volumes.Items[i]
		if pv.Annotations[provisionedBy] != p.name || pv.Status.Phase != corev1.VolumeReleased ||
			pv.Spec.PersistentVolumeReclaimPolicy != corev1.PersistentVolumeReclaimDelete {
			continue
		}
		// Only ever remove a directory of our own root.
		if local := pv.Spec.Local; local != nil && strings.HasPrefix(local.Path, p.root+"/") {
			if err := os.RemoveAll(local.Path); err != nil {
				log.Printf("volume %s: %v", pv.Name, err)
				continue
			}
		}
		err := p.client.CoreV1().PersistentVolumes().Delete(ctx, pv.Name, metav1.DeleteOptions{})
		if err != nil && !apierrors.IsNotFound(err) {
			log.Printf("volume %s: %v", pv.Name, err)
			continue
		}
		log.Printf("volume %s released: deleted", pv.Name)
	}
	return nil
}
