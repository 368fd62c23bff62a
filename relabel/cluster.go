package relabel

import (
	"fmt"
	"strings"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
)

// DefaultClusterLabel is the cluster label's name unless --cluster.label
// says otherwise; the source document uses it.
const DefaultClusterLabel = "cluster_name"

// ClusterOptions name the cluster every series of this fleet is labelled
// with (--cluster.label, --cluster.name). The workers add it as an external
// label, so it is on every sample they write and on nothing else.
type ClusterOptions struct {
	// Label is the label name; "" means DefaultClusterLabel.
	Label string
	// Name is the cluster's name, the label's value; "" turns the label off.
	Name string
}

// LabelName returns the configured label name.
func (o ClusterOptions) LabelName() string {
	if o.Label == "" {
		return DefaultClusterLabel
	}
	return o.Label
}

// Validate checks the label name: a legacy Prometheus label name (what
// every receiver accepts) that is not reserved (no leading "__").
func (o ClusterOptions) Validate() error {
	name := o.LabelName()
	if !model.LegacyValidation.IsValidLabelName(name) {
		return fmt.Errorf("cluster label %q: invalid label name", name)
	}
	if strings.HasPrefix(name, model.ReservedLabelPrefix) {
		return fmt.Errorf("cluster label %q: names starting with %q are reserved", name, model.ReservedLabelPrefix)
	}
	if o.Name != "" && !model.LabelValue(o.Name).IsValid() {
		return fmt.Errorf("cluster name %q: invalid label value", o.Name)
	}
	return nil
}

// ExternalLabels returns the external labels the workers get: the
// configuration's global external_labels with the cluster label set on
// top (the flag wins over a same-named external label). With no cluster
// name, ext is returned unchanged.
func (o ClusterOptions) ExternalLabels(ext labels.Labels) (labels.Labels, error) {
	if err := o.Validate(); err != nil {
		return labels.EmptyLabels(), err
	}
	if o.Name == "" {
		return ext, nil
	}
	b := labels.NewBuilder(ext)
	b.Set(o.LabelName(), o.Name)
	return b.Labels(), nil
}
