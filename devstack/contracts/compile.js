// Compile TestUSDC.sol once (npm solc@0.8.37, optimizer 200 runs, evmVersion cancun) into
// TestUSDC.json {abi, deployedBytecode, bytecode, compiler}. Run by hand; nothing compiles at test time:
//   npm install --prefix /tmp/solc solc@0.8.37 && NODE_PATH=/tmp/solc/node_modules node compile.js
const fs = require("fs");
const path = require("path");
const solc = require("solc");

const source = fs.readFileSync(path.join(__dirname, "TestUSDC.sol"), "utf8");
const input = {
  language: "Solidity",
  sources: { "TestUSDC.sol": { content: source } },
  settings: {
    optimizer: { enabled: true, runs: 200 },
    evmVersion: "cancun",
    outputSelection: { "*": { TestUSDC: ["abi", "evm.bytecode.object", "evm.deployedBytecode.object"] } },
  },
};
const output = JSON.parse(solc.compile(JSON.stringify(input)));
const errors = (output.errors || []).filter((e) => e.severity === "error");
for (const e of output.errors || []) console.error(e.formattedMessage);
if (errors.length) process.exit(1);
const contract = output.contracts["TestUSDC.sol"].TestUSDC;
const artifact = {
  contractName: "TestUSDC",
  compiler: "solc " + solc.version() + " optimizer 200 runs, evmVersion cancun",
  abi: contract.abi,
  bytecode: "0x" + contract.evm.bytecode.object,
  deployedBytecode: "0x" + contract.evm.deployedBytecode.object,
};
fs.writeFileSync(path.join(__dirname, "TestUSDC.json"), JSON.stringify(artifact, null, 1) + "\n");
console.log(`compiled TestUSDC with solc ${solc.version()}: runtime ${contract.evm.deployedBytecode.object.length / 2} bytes`);
