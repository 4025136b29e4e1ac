/*
 * replay.h - `prompteval replay`: send each sample's variables through a
 * running promptgate once per prompt version under test and write new
 * samples carrying the fresh outputs, ready for `prompteval run`.
 */
#ifndef EVL_REPLAY_H
#define EVL_REPLAY_H

/* Entry point of the `replay` command (argv[0] is "replay"). */
int evl_replay_main(int argc, char **argv);

#endif
