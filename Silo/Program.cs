using OrleansPush.Grains;
using OrleansPush.Hosting;
using OrleansPush.Silo;

// A web host only when the dashboard has a port (OrleansPush:Dashboard:Port); otherwise no HTTP server at all.
var builder = SiloDashboard.CreateBuilder(args);
SettingsCatalog.ThrowIfUnknown(builder.Configuration);
builder.UseOrleans(silo => silo.AddOrleansPushSilo(builder.Configuration));
builder.Services.Configure<HostOptions>(o => o.ShutdownTimeout = PushSilo.ShutdownTimeout);
builder.AddOrleansPushDashboard();

await builder.BuildSilo().RunAsync();
