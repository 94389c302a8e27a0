#!/usr/bin/env node
/*
 * fqdn-egress-agent: parses flags, starts the agent, stops it on SIGTERM or
 * SIGINT leaving the pinned programs and maps enforcing, and exits 0.
 * Exit codes: 0 stopped cleanly, 1 failed to start or crashed, 2 bad flags.
 */
import { Agent } from './agent.js';
import { ConfigError, parseConfig, usage } from './config.js';
import { createLogger } from './observability/log.js';

async function main(): Promise<void> {
  let cfg;
  try {
    cfg = parseConfig(process.argv.slice(2));
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`fqdn-egress-agent: ${err.message}\n`);
      process.exit(2);
    }
    throw err;
  }
  if (cfg === 'help') {
    process.stdout.write(`${usage()}\n`);
    return;
  }
  const log = createLogger(cfg.logLevel);
  let agent: Agent;
  try {
    agent = await Agent.start(cfg, log);
  } catch (err) {
    const e = err as Error & { details?: string };
    log.fatal({ err: e.message, ...(e.details ? { details: e.details } : {}) }, 'agent failed to start');
    process.exitCode = 1;
    return;
  }
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, 'stopping: learning stops, the pinned programs and maps keep enforcing');
    agent.stop().then(
      () => process.exit(0),
      (err: Error) => {
        log.error({ err: err.message }, 'stop failed');
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
}

void main();
