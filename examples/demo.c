#include <stdio.h>
#include <warden.h>
static int main_task(wd_task *self, void *arg) { (void)arg; return wd_sleep(self, WD_MSEC); }
int main(void) { int rc = wd_run(main_task, NULL); printf("rc=%d\n", rc); return rc ? 1 : 0; }
