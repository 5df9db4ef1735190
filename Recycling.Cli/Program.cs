using Recycling.Cli;

return RecycleCli.Run(args);
