/*
 * The kernel's limits as the agent passes them to the policy parser
 * (agent/pods/endpoints.ts does the same).
 */
import { MAX_PORT_RULES } from '../../agent/datapath/codecs.js';
import type { PolicyLimits } from '../../agent/policy/annotation.js';

export const POLICY_LIMITS: PolicyLimits = { portRulesPerName: MAX_PORT_RULES };
