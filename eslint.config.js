// ESLint (flat config): typescript-eslint's recommended rules, and the
// layering rules of agent/ as import restrictions (docs/code-overview.md):
// - dns/, policy/, sources/ and observability/ know no datapath: they import
//   no datapath/ values (types are fine: they describe what they are given);
// - cli/ reads the pins through datapath/ functions, never the addon.
import tseslint from 'typescript-eslint';

const noDatapathValues = {
  '@typescript-eslint/no-restricted-imports': [
    'error',
    {
      patterns: [
        {
          group: ['../datapath/*'],
          allowTypeImports: true,
          message: 'this layer knows no datapath: take what it needs as a parameter or a type (docs/code-overview.md)',
        },
      ],
    },
  ],
};

export default tseslint.config(
  { ignores: ['dist/**', 'build/**', 'node_modules/**', 'charts/**', 'bpf/**', 'native/**'] },
  ...tseslint.configs.recommended,
  {
    rules: {
      '@typescript-eslint/no-unused-vars': [
        'error',
        { argsIgnorePattern: '^_', varsIgnorePattern: '^_', caughtErrors: 'none' },
      ],
      // a variable a closure reads before its one assignment (a server's handler)
      'prefer-const': ['error', { ignoreReadBeforeAssign: true }],
      // node-addon-api objects and JSON from the API server are typed at the edge
      '@typescript-eslint/no-explicit-any': 'off',
    },
  },
  { files: ['agent/dns/**', 'agent/policy/**', 'agent/sources/**', 'agent/observability/**'], rules: noDatapathValues },
  {
    files: ['agent/cli/**'],
    rules: {
      '@typescript-eslint/no-restricted-imports': [
        'error',
        {
          paths: [
            {
              name: '../datapath/native.js',
              allowTypeImports: true,
              message: 'egressctl reads the pins through datapath/ functions, not the addon',
            },
          ],
        },
      ],
    },
  },
);
