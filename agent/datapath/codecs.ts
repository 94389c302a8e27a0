/*
 * The map modules' codecs, types and constants under their old import path
 * (each map's layout lives in its module under maps/). New code imports
 * from './maps/index.js'.
 */
export * from './maps/index.js';
