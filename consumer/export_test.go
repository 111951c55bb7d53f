package consumer

// AckFloorSeen is the route's ack floor as this relay last read it: where
// it re-creates the route's consumer from if the consumer is lost. Tests
// wait for it instead of for a lag read to happen.
func (r *Relay) AckFloorSeen(route string) uint64 {
	for _, rn := range r.runners {
		if rn.route.Name == route {
			return rn.bound.ackFloor.Load()
		}
	}
	return 0
}
