/* fake_nccl.h — the types of NCCL 2.28's nccl.h that the fake NCCL
 * (fake_libnccl.c) and its test (test_fake_nccl.c) share: the unique id,
 * ncclConfig_t, the result codes they use. */
#ifndef PIPEC_TESTS_FAKE_NCCL_H
#define PIPEC_TESTS_FAKE_NCCL_H
#include <stddef.h>

typedef int ncclResult_t;
enum { Success = 0, SystemError = 2, InvalidArgument = 4, InvalidUsage = 5, RemoteError = 6, InProgress = 7 };

typedef struct {
  char internal[128];
} UniqueId;
typedef struct { /* ncclConfig_t (ncclConfig_v22800) */
  size_t size;
  unsigned int magic, version;
  int blocking, cgaClusterSize, minCTAs, maxCTAs;
  const char *netName;
  int splitShare, trafficClass;
  const char *commName;
  int collnetEnable, CTAPolicy, shrinkShare, nvlsCTAs, nChannelsPerNetPeer, nvlinkCentricSched;
} Config;

#endif
