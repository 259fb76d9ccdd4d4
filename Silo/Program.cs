using OrleansPush.Grains;
using OrleansPush.Silo;

// A web host only when the dashboard has a port (OrleansPush:Dashboard:Port); otherwise no HTTP server at all.
var builder = SiloDashboard.CreateBuilder(args);
builder.UseOrleans(silo => silo.AddOrleansPushSilo(builder.Configuration));
builder.Services.Configure<HostOptions>(o => o.ShutdownTimeout = PushSilo.ShutdownTimeout);
builder.AddOrleansPushDashboard();

await builder.BuildSilo().RunAsync();
