using System.CommandLine;
using Recycling.Cli;

return RecycleCli.Run(args);
