/* Holds a UDP socket on port 4500 with UDP_ENCAP_ESPINUDP so that the
   kernel's XFRM decapsulates ESP in UDP arriving on it (RFC 3948). */
#include <netinet/in.h>
#include <stdio.h>
#include <sys/socket.h>
#include <unistd.h>
#ifndef UDP_ENCAP
#define UDP_ENCAP 100
#endif
#ifndef UDP_ENCAP_ESPINUDP
#define UDP_ENCAP_ESPINUDP 2
#endif
int main(void) {
  int s = socket(AF_INET, SOCK_DGRAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(4500)};
  int t = UDP_ENCAP_ESPINUDP;
  if (s < 0 || bind(s, (struct sockaddr *)&a, sizeof a) < 0 ||
      setsockopt(s, IPPROTO_UDP, UDP_ENCAP, &t, sizeof t) < 0) {
    perror("udp-encap");
    return 1;
  }
  puts("udp-encap: listening on 4500");
  fflush(stdout);
  for (;;) pause();
}
